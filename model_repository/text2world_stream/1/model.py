"""Public entry point: the one flow over BLS calls (cosmos_triton.backend.entry_model)."""

from cosmos_triton.backend.entry_model import EntryModel as TritonPythonModel  # noqa: F401

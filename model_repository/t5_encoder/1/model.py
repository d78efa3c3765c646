"""Internal stage (config parameter `stage`): cosmos_triton.backend.stage_model."""

from cosmos_triton.backend.stage_model import StageModel as TritonPythonModel  # noqa: F401

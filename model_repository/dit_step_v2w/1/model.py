"""DiT denoiser step: one guided evaluation (cosmos_triton.stages.DiTStep; the model name picks the weights)."""

from cosmos_triton.backend.stages import DiTStep as TritonPythonModel  # noqa: F401

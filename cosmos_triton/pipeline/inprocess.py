"""The flow in one process: stage calls are direct calls of the stage objects (tests, benchmarks, notebooks).

    stages = InProcessStages(ServeSettings(checkpoint_dir="checkpoints/small", ...))
    generation = Pipeline(TEXT2WORLD, stages)(prompt="A robot in a warehouse", seed=3)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cosmos_triton.deployment import ModelOptions, ServeSettings
from cosmos_triton.models.checkpoints import read_dit_checkpoint
from cosmos_triton.pipeline.catalog import dit_checkpoint, stage_models
from cosmos_triton.pipeline.flow import Generation, StepCallback, generate, validate
from cosmos_triton.pipeline.model_types import ModelType
from cosmos_triton.pipeline.stages import Stage


class InProcessStages:
    """A stage call that runs the stage object here; each stage is loaded on its first call, once."""

    def __init__(self, settings: ServeSettings, device: str = "cpu", options: ModelOptions | None = None) -> None:
        self.settings = settings
        self.specs = stage_models(settings, options)
        self.device = device
        self._loaded: dict[str, Stage] = {}

    def stage(self, model: str) -> Stage:
        if model not in self._loaded:
            spec = self.specs[model]
            self._loaded[model] = spec.stage(spec.params, self.device if spec.stage.gpu else "cpu")
        return self._loaded[model]

    def __call__(self, model: str, **inputs: Any) -> dict[str, Any]:
        return self.stage(model)(**inputs)


class Pipeline:
    """Text2World or Video2World end to end: the same validation and flow as the served entry points."""

    def __init__(self, model_type: ModelType, stages: InProcessStages) -> None:
        self.model_type = model_type
        self.stages = stages
        self.envelope = read_dit_checkpoint(Path(dit_checkpoint(stages.settings, model_type))).envelope

    def __call__(self, on_step: StepCallback | None = None, **fields: Any) -> Generation:
        """Request fields as the entry point's inputs (Video2World: `visual_input` bytes); absent ones get the
        envelope's defaults. Raises RequestError, GuardrailBlocked."""
        req = validate(self.envelope, fields)
        return generate(self.model_type, self.stages, req, self.stages.device, on_step)

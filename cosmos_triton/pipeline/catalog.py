"""The served models and their parameters, derived from the deployment's checkpoint choice: the one source the
config generator (cosmos_triton.server.repository) and the in-process pipeline (inprocess.py) both read."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from cosmos_triton.deployment import ModelOptions, ServeSettings
from cosmos_triton.pipeline.model_types import MODEL_TYPES, TEXT2WORLD, VIDEO2WORLD, ModelType
from cosmos_triton.pipeline.stages import STAGE_KINDS, Stage


@dataclass(frozen=True)
class ModelSpec:
    """One Triton model: a stage class and the parameters it is loaded with."""

    name: str
    kind: str  # key of STAGE_KINDS
    params: dict[str, str] = field(default_factory=dict)

    @property
    def stage(self) -> type[Stage]:
        return STAGE_KINDS[self.kind]


def stage_models(settings: ServeSettings, options: ModelOptions | None = None) -> dict[str, ModelSpec]:
    """Every stage model the two entry points can call, by Triton model name, with its parameters: checkpoint
    folders, memory (offload) and, for the DiT, the speed settings."""
    options = options or ModelOptions()
    guardrail = {"guardrail_dir": str(settings.guardrail_path)}
    tokenizer = {"tokenizer_dir": str(settings.tokenizer_path)}
    specs = (
        ModelSpec("text_guardrail", "text_guardrail", guardrail),
        ModelSpec(TEXT2WORLD.upsampler_model, "prompt_upsampler", {"upsampler_dir": str(settings.t2w_upsampler_path)}),
        ModelSpec(VIDEO2WORLD.upsampler_model, "prompt_upsampler_v2w",
                  {"upsampler_dir": str(settings.v2w_upsampler_path)}),
        ModelSpec("t5_encoder", "t5_encoder", {"t5_dir": str(settings.t5_path)}),
        ModelSpec(TEXT2WORLD.dit_model, "dit_step", {"checkpoint": str(settings.dit_path)}),
        ModelSpec(VIDEO2WORLD.dit_model, "dit_step", {"checkpoint": str(settings.v2w_dit_path)}),
        ModelSpec("tokenizer_encoder", "tokenizer_encoder", tokenizer),
        ModelSpec("tokenizer_decoder", "tokenizer_decoder", tokenizer),
        ModelSpec("video_guardrail", "video_guardrail", guardrail),
        ModelSpec("mp4_encoder", "mp4_encoder"),
    )
    dit = {"dit_mode": options.dit_mode, "attention": options.attention, "compile": options.compile,
           "compile_cache_dir": options.compile_cache_dir, "warm": options.warm}
    if options.tensorrt_plans:
        dit |= {"backend": "tensorrt", "plan_dir": options.tensorrt_plans}
    out = {}
    for spec in specs:
        params = dict(spec.params)
        if spec.stage.gpu:
            params["offload"] = options.offload_for(spec.name)
        if spec.kind == "dit_step":
            params |= dit
        out[spec.name] = ModelSpec(spec.name, spec.kind, params)
    return out


# The stage models each entry point calls.
ENTRY_STAGES: dict[str, tuple[str, ...]] = {
    TEXT2WORLD.name: ("text_guardrail", TEXT2WORLD.upsampler_model, "t5_encoder", TEXT2WORLD.dit_model,
                      "tokenizer_decoder", "video_guardrail", "mp4_encoder"),
    VIDEO2WORLD.name: (VIDEO2WORLD.upsampler_model, "text_guardrail", "t5_encoder", "tokenizer_encoder",
                       VIDEO2WORLD.dit_model, "tokenizer_decoder", "video_guardrail", "mp4_encoder"),
}
ENTRY_POINTS = tuple(m.entry for m in MODEL_TYPES.values())  # the public model names a deployment can serve


def dit_checkpoint(settings: ServeSettings, model_type: ModelType) -> str:
    return stage_models(settings)[model_type.dit_model].params["checkpoint"]


def served_model_types(settings: ServeSettings) -> tuple[ModelType, ...]:
    """The model types of `settings.entry_points` (all when empty) whose DiT checkpoint exists (all of those when
    none does: the committed, machine-independent configs), so a server with only the Text2World weights still
    becomes ready."""
    from pathlib import Path

    unknown = set(settings.entry_points) - set(ENTRY_POINTS)
    if unknown:
        raise ValueError(f"entry_points: unknown {sorted(unknown)}; accepted: {', '.join(ENTRY_POINTS)}")
    wanted = tuple(m for m in MODEL_TYPES.values() if not settings.entry_points or m.entry in settings.entry_points)
    available = tuple(m for m in wanted if Path(dit_checkpoint(settings, m)).is_dir())
    return available or wanted


def envelope_json(settings: ServeSettings, model_type: ModelType) -> str:
    """The envelope of the checkpoint to be served (clients read it from the entry point's config); the preset's
    when the checkpoint is not on this machine."""
    from pathlib import Path

    from cosmos_triton.models.checkpoints import read_dit_checkpoint
    from cosmos_triton.request.envelope import ORIGINAL_ENVELOPE, ORIGINAL_V2W_ENVELOPE

    path = Path(dit_checkpoint(settings, model_type))
    if path.is_dir():
        envelope = read_dit_checkpoint(path).envelope
    else:
        envelope = ORIGINAL_ENVELOPE if model_type is TEXT2WORLD else ORIGINAL_V2W_ENVELOPE
    return json.dumps(envelope.to_dict(), sort_keys=True)


def model_kinds() -> dict[str, str]:
    """Triton model name -> stage kind; the names do not depend on the checkpoints."""
    return {name: spec.kind for name, spec in stage_models(ServeSettings()).items()}

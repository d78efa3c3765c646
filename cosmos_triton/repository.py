"""Every config.pbtxt of the Triton model repository, generated from this one description.

`python -m cosmos_triton.repository` rewrites model_repository/*/config.pbtxt for the default checkpoints;
the launcher renders a copy for the checkpoints it serves (the envelope and checkpoint paths are config
parameters, so clients can read what the server accepts from the ensemble's config).
Stdlib only: importable without torch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from cosmos_triton.checkpoints import read_dit_checkpoint
from cosmos_triton.settings import ServeSettings

REPOSITORY_DIR = Path(__file__).resolve().parent.parent / "model_repository"
PARAM_ENVELOPE = "envelope"  # JSON of the DiT checkpoint's Envelope, read by clients


@dataclass(frozen=True)
class Io:
    name: str
    dtype: str  # Triton TYPE_* suffix
    dims: tuple[int, ...] = (1,)
    optional: bool = False


@dataclass(frozen=True)
class Stage:
    """One Python-backend model. `gpu` stages run where Triton puts them (KIND_AUTO: the GPU when there is one)
    and take GPU-resident inputs; the others are CPU work (validation, mp4 muxing)."""

    name: str
    inputs: tuple[Io, ...]
    outputs: tuple[Io, ...]
    gpu: bool = True


LATENT = (1, 16, -1, -1, -1)
CONTEXT = (1, 512, 1024)
REQUEST_INPUTS = (
    Io("prompt", "STRING"),
    Io("negative_prompt", "STRING", optional=True),
    Io("seed", "INT64", optional=True),
    Io("num_steps", "INT32", optional=True),
    Io("guidance", "FP32", optional=True),
    Io("height", "INT32", optional=True),
    Io("width", "INT32", optional=True),
    Io("num_video_frames", "INT32", optional=True),
    Io("fps", "INT32", optional=True),
)
# The validated request: every field present, defaults filled in.
REQUEST = tuple(Io(io.name, io.dtype) for io in REQUEST_INPUTS)

STAGES: tuple[Stage, ...] = (
    Stage("text2world_request", REQUEST_INPUTS, REQUEST, gpu=False),
    Stage("text_guardrail", (Io("prompt", "STRING"),), (Io("prompt", "STRING"),)),
    Stage("t5_encoder", (Io("prompt", "STRING"), Io("negative_prompt", "STRING")),
          (Io("prompt_embedding", "BF16", CONTEXT), Io("negative_embedding", "BF16", CONTEXT),
           Io("has_negative", "BOOL"))),
    Stage("dit_step",
          (Io("x", "FP32", LATENT), Io("sigma", "FP32"), Io("cond", "BF16", CONTEXT), Io("uncond", "BF16", CONTEXT),
           Io("guidance", "FP32"), Io("fps", "FP32")),
          (Io("x0", "BF16", LATENT),)),
    Stage("sampler",
          (Io("prompt_embedding", "BF16", CONTEXT), Io("negative_embedding", "BF16", CONTEXT),
           Io("has_negative", "BOOL"),
           Io("seed", "INT64"), Io("num_steps", "INT32"), Io("guidance", "FP32"), Io("height", "INT32"),
           Io("width", "INT32"), Io("num_video_frames", "INT32"), Io("fps", "INT32")),
          (Io("latent", "FP32", LATENT),)),
    Stage("tokenizer_decoder", (Io("latent", "FP32", LATENT),), (Io("video", "UINT8", (-1, -1, -1, 3)),)),
    Stage("video_guardrail", (Io("video", "UINT8", (-1, -1, -1, 3)),), (Io("video", "UINT8", (-1, -1, -1, 3)),)),
    Stage("mp4_encoder", (Io("video", "UINT8", (-1, -1, -1, 3)), Io("fps", "INT32")), (Io("mp4", "STRING"),),
          gpu=False),
)


@dataclass(frozen=True)
class Step:
    model: str
    input_map: dict[str, str]  # model input -> ensemble tensor
    output_map: dict[str, str] = field(default_factory=dict)  # model output -> ensemble tensor


def _same(*names: str) -> dict[str, str]:
    return {n: n for n in names}


# Text2World: validate -> text guardrail [-> upsampler -> text guardrail: later issue] -> T5
#             -> sampler (BLS over dit_step) -> decode -> video guardrail -> mp4
TEXT2WORLD_STEPS: tuple[Step, ...] = (
    Step("text2world_request", _same(*(io.name for io in REQUEST_INPUTS)),
         {io.name: f"req_{io.name}" for io in REQUEST}),
    # "prompt_used" is an ensemble output: the prompt that passed the last text guardrail.
    Step("text_guardrail", {"prompt": "req_prompt"}, {"prompt": "prompt_used"}),
    Step("t5_encoder", {"prompt": "prompt_used", "negative_prompt": "req_negative_prompt"},
         _same("prompt_embedding", "negative_embedding", "has_negative")),
    Step("sampler",
         {**_same("prompt_embedding", "negative_embedding", "has_negative"),
          **{n: f"req_{n}" for n in ("seed", "num_steps", "guidance", "height", "width", "num_video_frames", "fps")}},
         _same("latent")),
    Step("tokenizer_decoder", _same("latent"), {"video": "frames"}),
    Step("video_guardrail", {"video": "frames"}, {"video": "safe_frames"}),
    Step("mp4_encoder", {"video": "safe_frames", "fps": "req_fps"}, {"mp4": "video"}),
)
TEXT2WORLD_OUTPUTS = (Io("video", "STRING"), Io("prompt_used", "STRING"))


def _dims(dims: tuple[int, ...]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _io_block(kind: str, ios: tuple[Io, ...]) -> str:
    rows = []
    for io in ios:
        opt = "\n    optional: true" if io.optional else ""
        fields = f"    name: \"{io.name}\"\n    data_type: TYPE_{io.dtype}\n    dims: {_dims(io.dims)}{opt}"
        rows.append(f"  {{\n{fields}\n  }}")
    return f"{kind} [\n" + ",\n".join(rows) + "\n]\n"


def _parameter(key: str, value: str) -> str:
    return f"parameters: {{\n  key: \"{key}\"\n  value: {{ string_value: {json.dumps(value)} }}\n}}\n"


HEADER = "# Generated by `python -m cosmos_triton.repository`: edit cosmos_triton/repository.py, not this file.\n"


def stage_config(stage: Stage, envelope_json: str) -> str:
    text = HEADER + f'name: "{stage.name}"\nbackend: "python"\nmax_batch_size: 0\n'
    text += _io_block("input", stage.inputs) + _io_block("output", stage.outputs)
    kind = "KIND_AUTO" if stage.gpu else "KIND_CPU"
    text += f"instance_group [\n  {{\n    count: 1\n    kind: {kind}\n  }}\n]\n"
    if stage.gpu:  # let GPU tensors arrive on the GPU instead of being staged through host memory
        text += _parameter("FORCE_CPU_ONLY_INPUT_TENSORS", "no")
    if stage.name == "text2world_request":
        text += _parameter(PARAM_ENVELOPE, envelope_json)
    return text


def ensemble_config(name: str, inputs: tuple[Io, ...], outputs: tuple[Io, ...], steps: tuple[Step, ...],
                    envelope_json: str) -> str:
    text = HEADER + f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: 0\n'
    text += _io_block("input", inputs) + _io_block("output", outputs)
    rendered = []
    for step in steps:
        maps = "".join(f'      input_map {{ key: "{k}" value: "{v}" }}\n' for k, v in step.input_map.items())
        maps += "".join(f'      output_map {{ key: "{k}" value: "{v}" }}\n' for k, v in step.output_map.items())
        rendered.append(f'    {{\n      model_name: "{step.model}"\n      model_version: -1\n{maps}    }}')
    text += "ensemble_scheduling {\n  step [\n" + ",\n".join(rendered) + "\n  ]\n}\n"
    return text + _parameter(PARAM_ENVELOPE, envelope_json)


def render_configs(settings: ServeSettings) -> dict[str, str]:
    """model name -> config.pbtxt text."""
    envelope = read_dit_checkpoint(settings.dit_path).envelope if settings.dit_path.is_dir() else None
    if envelope is None:  # rendering the committed defaults on a machine without the real checkpoints
        from cosmos_triton.checkpoints import DIT_PRESETS, ORIGINAL_ENVELOPE

        assert settings.dit_dir in DIT_PRESETS, f"unknown DiT checkpoint {settings.dit_path}"
        envelope = ORIGINAL_ENVELOPE
    envelope_json = json.dumps(envelope.to_dict(), sort_keys=True)
    configs = {s.name: stage_config(s, envelope_json) for s in STAGES}
    configs["text2world"] = ensemble_config("text2world", REQUEST_INPUTS, TEXT2WORLD_OUTPUTS, TEXT2WORLD_STEPS,
                                            envelope_json)
    return configs


def write_repository(out: Path, settings: ServeSettings, source: Path = REPOSITORY_DIR) -> Path:
    """Render configs into `out`; model code is linked from the committed repository (one copy of each model.py)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in render_configs(settings).items():
        model_dir = out / name
        model_dir.mkdir(exist_ok=True)
        (model_dir / "config.pbtxt").write_text(text)
        version = model_dir / "1"
        if out.resolve() != source.resolve() and (source / name / "1").is_dir():
            if version.is_symlink() or version.is_file():
                version.unlink()
            elif version.is_dir():
                shutil.rmtree(version)
            os.symlink((source / name / "1").resolve(), version, target_is_directory=True)
        version.mkdir(exist_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPOSITORY_DIR)
    args = parser.parse_args(argv)
    write_repository(args.out, ServeSettings())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

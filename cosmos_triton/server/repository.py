"""Every config.pbtxt of the Triton model repository, generated from this one description.

`python -m cosmos_triton.server.repository` rewrites model_repository/*/config.pbtxt for the default checkpoints;
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

from cosmos_triton.models.checkpoints import read_dit_checkpoint
from cosmos_triton.settings import ServeSettings

REPOSITORY_DIR = Path(__file__).resolve().parents[2] / "model_repository"
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
    Io("disable_prompt_upsampler", "BOOL", optional=True),
    Io("word_limit_to_skip_upsampler", "INT32", optional=True),
)
# The validated request: every field present, defaults filled in.
REQUEST = tuple(Io(io.name, io.dtype) for io in REQUEST_INPUTS)
FRAMES = (-1, -1, -1, 3)  # uint8 [T, H, W, 3]
# Video2World's prompt is optional: with the upsampler on (the default) it is written from the image.
V2W_REQUEST_INPUTS = (Io("prompt", "STRING", optional=True), *REQUEST_INPUTS[1:], Io("visual_input", "STRING"),
                      Io("num_input_frames", "INT32", optional=True))
# The validated Video2World request: the visual input decoded to its last 1 or 9 frames.
V2W_REQUEST = (*REQUEST, Io("num_input_frames", "INT32"), Io("input_frames", "UINT8", FRAMES))
DIT_STEP_INPUTS = (Io("x", "FP32", LATENT), Io("sigma", "FP32"), Io("cond", "BF16", CONTEXT),
                   Io("uncond", "BF16", CONTEXT), Io("guidance", "FP32"), Io("fps", "FP32"))

STAGES: tuple[Stage, ...] = (
    Stage("text2world_request", REQUEST_INPUTS, REQUEST, gpu=False),
    Stage("text_guardrail", (Io("prompt", "STRING"),), (Io("prompt", "STRING"),)),
    # The 12B Text2World upsampler; passes the prompt through when disabled or longer than the word limit.
    Stage("prompt_upsampler",
          (Io("prompt", "STRING"), Io("disable_prompt_upsampler", "BOOL"), Io("word_limit_to_skip_upsampler", "INT32"),
           Io("seed", "INT64")),
          (Io("prompt", "STRING"),)),
    # Pixtral-12B: writes the prompt from the last input frame; passes the user's prompt through when disabled.
    Stage("prompt_upsampler_v2w",
          (Io("prompt", "STRING"), Io("disable_prompt_upsampler", "BOOL"), Io("input_frames", "UINT8", FRAMES),
           Io("seed", "INT64")),
          (Io("prompt", "STRING"),)),
    Stage("t5_encoder", (Io("prompt", "STRING"), Io("negative_prompt", "STRING")),
          (Io("prompt_embedding", "BF16", CONTEXT), Io("negative_embedding", "BF16", CONTEXT),
           Io("has_negative", "BOOL"))),
    Stage("dit_step", DIT_STEP_INPUTS, (Io("x0", "BF16", LATENT),)),
    # Video2World weights; the condition: clean latent, its augmented copy, how many latent frames are given
    Stage("dit_step_v2w",
          (*DIT_STEP_INPUTS, Io("gt_latent", "BF16", LATENT), Io("augment_latent", "FP32", LATENT),
           Io("num_condition_frames", "INT32")),
          (Io("x0", "BF16", LATENT),)),
    # One sampler for both: with a condition latent it calls dit_step_v2w, without it dit_step.
    Stage("sampler",
          (Io("prompt_embedding", "BF16", CONTEXT), Io("negative_embedding", "BF16", CONTEXT),
           Io("has_negative", "BOOL"),
           Io("seed", "INT64"), Io("num_steps", "INT32"), Io("guidance", "FP32"), Io("height", "INT32"),
           Io("width", "INT32"), Io("num_video_frames", "INT32"), Io("fps", "INT32"),
           Io("condition_latent", "BF16", LATENT, optional=True), Io("num_condition_frames", "INT32", optional=True)),
          (Io("latent", "FP32", LATENT),)),
    Stage("video2world_request", V2W_REQUEST_INPUTS, V2W_REQUEST, gpu=False),
    Stage("tokenizer_encoder",
          (Io("input_frames", "UINT8", FRAMES), Io("height", "INT32"), Io("width", "INT32"),
           Io("num_video_frames", "INT32"), Io("num_input_frames", "INT32")),
          (Io("condition_latent", "BF16", LATENT), Io("num_condition_frames", "INT32"))),
    Stage("tokenizer_decoder", (Io("latent", "FP32", LATENT),), (Io("video", "UINT8", FRAMES),)),
    Stage("video_guardrail", (Io("video", "UINT8", FRAMES),), (Io("video", "UINT8", FRAMES),)),
    Stage("mp4_encoder", (Io("video", "UINT8", FRAMES), Io("fps", "INT32")), (Io("mp4", "STRING"),),
          gpu=False),
)


@dataclass(frozen=True)
class Step:
    model: str
    input_map: dict[str, str]  # model input -> ensemble tensor
    output_map: dict[str, str] = field(default_factory=dict)  # model output -> ensemble tensor


SAMPLER_PARAMS = ("seed", "num_steps", "guidance", "height", "width", "num_video_frames", "fps")


def _same(*names: str) -> dict[str, str]:
    return {n: n for n in names}


# Text2World: validate -> text guardrail -> prompt upsampler -> text guardrail -> T5
#             -> sampler (BLS over dit_step) -> decode -> video guardrail -> mp4
TEXT2WORLD_STEPS: tuple[Step, ...] = (
    Step("text2world_request", _same(*(io.name for io in REQUEST_INPUTS)),
         {io.name: f"req_{io.name}" for io in REQUEST}),
    # The guardrail runs on the user's prompt, then again on the upsampled one (§7.0); "prompt_used", an ensemble
    # output, is the prompt that passed the last check.
    Step("text_guardrail", {"prompt": "req_prompt"}, {"prompt": "checked_prompt"}),
    Step("prompt_upsampler",
         {"prompt": "checked_prompt",
          **{n: f"req_{n}" for n in ("disable_prompt_upsampler", "word_limit_to_skip_upsampler", "seed")}},
         {"prompt": "upsampled_prompt"}),
    Step("text_guardrail", {"prompt": "upsampled_prompt"}, {"prompt": "prompt_used"}),
    Step("t5_encoder", {"prompt": "prompt_used", "negative_prompt": "req_negative_prompt"},
         _same("prompt_embedding", "negative_embedding", "has_negative")),
    Step("sampler",
         {**_same("prompt_embedding", "negative_embedding", "has_negative"),
          **{n: f"req_{n}" for n in SAMPLER_PARAMS}},
         _same("latent")),
    Step("tokenizer_decoder", _same("latent"), {"video": "frames"}),
    Step("video_guardrail", {"video": "frames"}, {"video": "safe_frames"}),
    Step("mp4_encoder", {"video": "safe_frames", "fps": "req_fps"}, {"mp4": "video"}),
)
TEXT2WORLD_OUTPUTS = (Io("video", "STRING"), Io("prompt_used", "STRING"))
# Video2World: validate + decode the visual input -> prompt upsampler (Pixtral) -> text guardrail -> T5
#              -> tokenizer encoder (condition latent)
#              -> sampler (BLS over dit_step_v2w) -> decode -> video guardrail -> mp4
VIDEO2WORLD_STEPS: tuple[Step, ...] = (
    # (the word limit is a Text2World rule: Video2World's upsampler writes the prompt from the image)
    Step("video2world_request", _same(*(io.name for io in V2W_REQUEST_INPUTS)),
         {io.name: f"req_{io.name}" for io in V2W_REQUEST if io.name != "word_limit_to_skip_upsampler"}),
    # With the upsampler on only its prompt is checked, with it off only the user's (§7.0).
    Step("prompt_upsampler_v2w",
         {n: f"req_{n}" for n in ("prompt", "disable_prompt_upsampler", "input_frames", "seed")},
         {"prompt": "upsampled_prompt"}),
    Step("text_guardrail", {"prompt": "upsampled_prompt"}, {"prompt": "prompt_used"}),
    Step("t5_encoder", {"prompt": "prompt_used", "negative_prompt": "req_negative_prompt"},
         _same("prompt_embedding", "negative_embedding", "has_negative")),
    Step("tokenizer_encoder",
         {n: f"req_{n}" for n in ("input_frames", "height", "width", "num_video_frames", "num_input_frames")},
         _same("condition_latent", "num_condition_frames")),
    Step("sampler",
         {**_same("prompt_embedding", "negative_embedding", "has_negative", "condition_latent",
                  "num_condition_frames"),
          **{n: f"req_{n}" for n in SAMPLER_PARAMS}},
         _same("latent")),
    Step("tokenizer_decoder", _same("latent"), {"video": "frames"}),
    Step("video_guardrail", {"video": "frames"}, {"video": "safe_frames"}),
    Step("mp4_encoder", {"video": "safe_frames", "fps": "req_fps"}, {"mp4": "video"}),
)


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


HEADER = "# Generated by `python -m cosmos_triton.server.repository`: do not edit.\n"


def stage_config(stage: Stage, envelope_json: str | None) -> str:
    text = HEADER + f'name: "{stage.name}"\nbackend: "python"\nmax_batch_size: 0\n'
    text += _io_block("input", stage.inputs) + _io_block("output", stage.outputs)
    kind = "KIND_AUTO" if stage.gpu else "KIND_CPU"
    text += f"instance_group [\n  {{\n    count: 1\n    kind: {kind}\n  }}\n]\n"
    if stage.gpu:  # let GPU tensors arrive on the GPU instead of being staged through host memory
        text += _parameter("FORCE_CPU_ONLY_INPUT_TENSORS", "no")
    if envelope_json is not None:
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


def _envelope_json(dit_path: Path, preset_name: str) -> str:
    """The envelope of the checkpoint to be served; the preset's when it is not on this machine (committed configs)."""
    if dit_path.is_dir():
        envelope = read_dit_checkpoint(dit_path).envelope
    else:
        from cosmos_triton.request.envelope import ORIGINAL_ENVELOPE, ORIGINAL_V2W_ENVELOPE

        envelope = ORIGINAL_ENVELOPE if preset_name.endswith("Text2World") else ORIGINAL_V2W_ENVELOPE
    return json.dumps(envelope.to_dict(), sort_keys=True)


# Which models serve which entry point; stages shared by both appear in both.
ENSEMBLES = {
    "text2world": ("text2world_request", "text_guardrail", "prompt_upsampler", "t5_encoder", "dit_step", "sampler",
                   "tokenizer_decoder", "video_guardrail", "mp4_encoder"),
    "video2world": ("video2world_request", "prompt_upsampler_v2w", "text_guardrail", "t5_encoder",
                    "tokenizer_encoder", "dit_step_v2w", "sampler", "tokenizer_decoder", "video_guardrail",
                    "mp4_encoder"),
}


def served_ensembles(settings: ServeSettings) -> tuple[str, ...]:
    """The entry points whose DiT checkpoint exists (all of them for the committed, machine-independent configs)."""
    available = tuple(name for name, path in (("text2world", settings.dit_path), ("video2world", settings.v2w_dit_path))
                      if path.is_dir())
    return available or tuple(ENSEMBLES)


def render_configs(settings: ServeSettings, ensembles: tuple[str, ...] = tuple(ENSEMBLES)) -> dict[str, str]:
    """model name -> config.pbtxt text, for the given entry points."""
    t2w = _envelope_json(settings.dit_path, settings.dit_dir)
    v2w = _envelope_json(settings.v2w_dit_path, settings.v2w_dit_dir)
    request_envelopes = {"text2world_request": t2w, "video2world_request": v2w}
    wanted = {m for e in ensembles for m in ENSEMBLES[e]}
    configs = {s.name: stage_config(s, request_envelopes.get(s.name)) for s in STAGES if s.name in wanted}
    if "text2world" in ensembles:
        configs["text2world"] = ensemble_config("text2world", REQUEST_INPUTS, TEXT2WORLD_OUTPUTS, TEXT2WORLD_STEPS,
                                                t2w)
    if "video2world" in ensembles:
        configs["video2world"] = ensemble_config("video2world", V2W_REQUEST_INPUTS, TEXT2WORLD_OUTPUTS,
                                                 VIDEO2WORLD_STEPS, v2w)
    return configs


def write_repository(out: Path, settings: ServeSettings, source: Path = REPOSITORY_DIR,
                     ensembles: tuple[str, ...] | None = None) -> Path:
    """Render configs into `out`; model code is linked from the committed repository (one copy of each model.py).
    By default only the entry points whose DiT checkpoint is present are rendered, so a server with only the
    Text2World weights still becomes ready."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in render_configs(settings, ensembles or served_ensembles(settings)).items():
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
    write_repository(args.out, ServeSettings(), ensembles=tuple(ENSEMBLES))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

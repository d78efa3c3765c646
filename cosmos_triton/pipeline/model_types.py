"""Text2World and Video2World: what differs between the two request flows, as data and two small subclasses.

Everything else (guardrails, T5, sampling, decoding, video guardrail, mp4) is the one flow in `flow.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from cosmos_triton.pipeline.io import Io

# A stage call: model name + named inputs -> named outputs (a direct call in process, a BLS call on the server).
StageCall = Callable[..., dict[str, Any]]

# Every request input is optional for Triton, so that a missing one gets our error naming it (validation fills
# defaults and checks required fields), not Triton's.
COMMON_INPUTS = (
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
    Io("cache_threshold", "FP32", optional=True),  # > 0: the lossy step cache (speed mode "cache"); 0: exact
)
OUTPUTS = (Io("video", "STRING", binary=True), Io("prompt_used", "STRING"), Io("skipped_evaluations", "INT32"))
# the streaming entry points send these after every denoising step, then OUTPUTS in the final response
PROGRESS_OUTPUTS = (Io("step", "INT32"), Io("total_steps", "INT32"), Io("elapsed_s", "FP32"), Io("eta_s", "FP32"))


@dataclass(frozen=True)
class ModelType:
    name: ClassVar[str]
    entry: ClassVar[str]  # the public entry point; `<entry>_stream` is its streaming twin
    dit_model: ClassVar[str]  # the Triton model of its DiT step
    upsampler_model: ClassVar[str]
    request_inputs: ClassVar[tuple[Io, ...]]

    @property
    def stream_entry(self) -> str:
        return f"{self.entry}_stream"

    def prompt_used(self, call: StageCall, req: dict[str, Any]) -> str:
        """The prompt that passed the text guardrail, upsampled unless disabled."""
        raise NotImplementedError

    def uncond_without_negative(self, cond: Any) -> Any:
        """The unconditional context when the negative prompt is empty."""
        raise NotImplementedError

    def condition_latent(self, call: StageCall, req: dict[str, Any]) -> Any | None:  # noqa: ARG002
        """The encoded input frames (Video2World), None for Text2World."""
        return None


@dataclass(frozen=True)
class Text2World(ModelType):
    name = "Text2World"
    entry = "text2world"
    dit_model = "dit_step"
    upsampler_model = "prompt_upsampler"
    request_inputs = (Io("prompt", "STRING", optional=True), *COMMON_INPUTS)

    def prompt_used(self, call: StageCall, req: dict[str, Any]) -> str:
        # the guardrail runs on the user's prompt and again on the upsampled one
        from cosmos_triton.upsampler.text2world import word_count_exceeds

        prompt = call("text_guardrail", prompt=req["prompt"])["prompt"]
        if req["disable_prompt_upsampler"] or word_count_exceeds(prompt, req["word_limit_to_skip_upsampler"]):
            return prompt
        upsampled = call(self.upsampler_model, prompt=prompt, seed=req["seed"])["prompt"]
        return call("text_guardrail", prompt=upsampled)["prompt"]

    def uncond_without_negative(self, cond: Any) -> Any:
        import torch

        return torch.zeros_like(cond)  # the original multiplies the T5 embedding by 0


@dataclass(frozen=True)
class Video2World(ModelType):
    name = "Video2World"
    entry = "video2world"
    dit_model = "dit_step_v2w"
    upsampler_model = "prompt_upsampler_v2w"
    # the prompt is optional: with the upsampler on (the default) Pixtral writes it from the last input frame
    request_inputs = (Io("prompt", "STRING", optional=True), *COMMON_INPUTS,
                      Io("visual_input", "STRING", optional=True, binary=True),
                      Io("num_input_frames", "INT32", optional=True))

    def prompt_used(self, call: StageCall, req: dict[str, Any]) -> str:
        # only the prompt that is used is checked: the user's with the upsampler off, Pixtral's with it on
        if req["disable_prompt_upsampler"]:
            prompt = req["prompt"]
        else:
            prompt = call(self.upsampler_model, input_frames=req["last_frame"], seed=req["seed"])["prompt"]
        return call("text_guardrail", prompt=prompt)["prompt"]

    def uncond_without_negative(self, cond: Any) -> Any:
        return cond  # the original's Video2World keeps the positive context: CFG becomes a no-op

    def condition_latent(self, call: StageCall, req: dict[str, Any]) -> Any | None:
        return call("tokenizer_encoder", condition_frames=req["condition_frames"],
                    num_video_frames=req["num_video_frames"])["condition_latent"]


TEXT2WORLD = Text2World()
VIDEO2WORLD = Video2World()
MODEL_TYPES: dict[str, ModelType] = {m.name: m for m in (TEXT2WORLD, VIDEO2WORLD)}

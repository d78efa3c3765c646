"""Every stage of the request flow: one class each, loaded once from its parameters, called with named inputs and
returning named outputs (the `Io` descriptions below). The same objects run in process
(`cosmos_triton.pipeline.inprocess`) and behind one Triton model each (`cosmos_triton.backend.stage_model`).

Heavy libraries are imported inside each stage's constructor, so a process imports only what its stage needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cosmos_triton.pipeline.io import CONTEXT, FRAMES, LATENT, Io


def as_uint8_frames(video: Any) -> np.ndarray:
    """uint8 [T, H, W, 3] as a host numpy array, whether it arrives as numpy or as a (device) torch tensor."""
    if isinstance(video, np.ndarray):
        return video
    return video.cpu().numpy()


# keep | prefetch | release | "": how an offloaded stage treats its weights around this call (models/offload.py)
MEMORY_HINT = Io("memory_hint", "STRING", optional=True)


class Stage:
    """A stage: `kind` names the class in the registry; `params` are the keys its constructor reads. A GPU stage
    holds its models through `hold` (resident, or offloaded per its `offload` parameter) and takes the optional
    `memory_hint` input; its work is `run`."""

    kind: ClassVar[str]
    inputs: ClassVar[tuple[Io, ...]]
    outputs: ClassVar[tuple[Io, ...]]
    params: ClassVar[tuple[str, ...]] = ()
    gpu: ClassVar[bool] = True  # False: CPU work (mp4 muxing) that never takes a GPU instance

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.gpu and "inputs" in cls.__dict__:
            cls.inputs = (*cls.inputs, MEMORY_HINT)

    def __init__(self, params: Mapping[str, str], device: str) -> None:
        missing = [p for p in self.params if not params.get(p)]
        if missing:
            raise ValueError(f"stage {self.kind} needs the parameter(s) {', '.join(missing)}")
        self.device = device
        self.memory: Any = None
        if self.gpu:
            from cosmos_triton.models.stage_offload import MemorySettings

            self.memory_settings = MemorySettings.from_params(params)

    @property
    def load_device(self) -> str:
        """Where to load the weights: the host when the stage is offloaded, else its device."""
        return self.memory_settings.load_device(self.device) if self.gpu else "cpu"

    def hold(self, obj: Any) -> Any:
        """Keep `obj` (the stage's loaded model object) resident or offloaded, as the parameters say."""
        self.memory = self.memory_settings.apply(obj, self.device)
        return obj

    def __call__(self, memory_hint: str | None = None, **inputs: Any) -> dict[str, Any]:
        if self.memory is None:
            return self.run(**inputs)
        hint = (memory_hint or "").strip().lower()
        if hint in ("prefetch", "release"):  # a control call: no work, no outputs
            self.memory.hint(hint)
            return {}
        with self.memory.call(hint):
            return self.run(**inputs)

    # Each stage's pure function: keyword arguments named as its `inputs`, a dict named as its `outputs`.
    run: Callable[..., dict[str, Any]]


class TextGuardrailStage(Stage):
    """Blocklist then Aegis; a block raises GuardrailBlocked naming the guardrail."""

    kind = "text_guardrail"
    inputs = (Io("prompt", "STRING"),)
    outputs = (Io("prompt", "STRING"),)
    params = ("guardrail_dir",)

    def __init__(self, params: Mapping[str, str], device: str) -> None:
        super().__init__(params, device)
        from cosmos_triton.guardrail.runner import TextGuardrail

        self.guardrail = self.hold(TextGuardrail(Path(params["guardrail_dir"]), self.load_device))

    def run(self, prompt: str) -> dict[str, Any]:
        return {"prompt": self.guardrail(prompt)}


class Text2WorldUpsamplerStage(Stage):
    """The 12B Mistral-NeMo upsampler: a short caption -> a long one (the skip rules live in the flow)."""

    kind = "prompt_upsampler"
    inputs = (Io("prompt", "STRING"), Io("seed", "INT64"))
    outputs = (Io("prompt", "STRING"),)
    params = ("upsampler_dir",)

    def __init__(self, params: Mapping[str, str], device: str) -> None:
        super().__init__(params, device)
        from cosmos_triton.upsampler.text2world import Text2WorldPromptUpsampler

        self.upsampler = self.hold(Text2WorldPromptUpsampler(Path(params["upsampler_dir"]), self.load_device))

    def run(self, prompt: str, seed: int) -> dict[str, Any]:
        return {"prompt": self.upsampler.upsample(prompt, int(seed))}


class Video2WorldUpsamplerStage(Stage):
    """Pixtral-12B: writes the prompt from the last input frame (the flow sends only that one)."""

    kind = "prompt_upsampler_v2w"
    inputs = (Io("input_frames", "UINT8", FRAMES), Io("seed", "INT64"))
    outputs = (Io("prompt", "STRING"),)
    params = ("upsampler_dir",)

    def __init__(self, params: Mapping[str, str], device: str) -> None:
        super().__init__(params, device)
        from cosmos_triton.upsampler.video2world import Video2WorldPromptUpsampler

        self.upsampler = self.hold(Video2WorldPromptUpsampler(Path(params["upsampler_dir"]), self.load_device))

    def run(self, input_frames: Any, seed: int) -> dict[str, Any]:
        return {"prompt": self.upsampler.upsample(as_uint8_frames(input_frames), int(seed))}


class TextEncoderStage(Stage):
    """T5-11B encoder in fp32, one prompt per pass, padded positions zeroed; bf16 out as the original's
    prepare_data_batch casts it."""

    kind = "t5_encoder"
    inputs = (Io("prompt", "STRING"),)
    outputs = (Io("embedding", "BF16", CONTEXT),)
    params = ("t5_dir",)

    def __init__(self, params: Mapping[str, str], device: str) -> None:
        super().__init__(params, device)
        from cosmos_triton.models.text_encoder import T5TextEncoder

        self.t5 = self.hold(T5TextEncoder(Path(params["t5_dir"]), self.load_device))

    def run(self, prompt: str) -> dict[str, Any]:
        import torch

        return {"embedding": self.t5.encode([prompt]).to(torch.bfloat16)}


class DiTStepStage(Stage):
    """One guided evaluation x0 = cond + g (cond - uncond), EDM-preconditioned in bf16. With the Video2World
    condition (clean latent, its augmented copy, how many latent frames are given) each branch is conditioned.
    Speed (models/dit_speed.py): attention kernel, compiled blocks warmed at load, FP8 in `fp8` mode; the step
    cache of request `session` skips block evaluations when `cache_threshold` > 0 (0: exact)."""

    kind = "dit_step"
    inputs = (
        Io("x", "FP32", LATENT),
        Io("sigma", "FP32", scalar=False),
        Io("cond", "BF16", CONTEXT),
        Io("uncond", "BF16", CONTEXT),
        Io("guidance", "FP32"),
        Io("fps", "FP32"),
        Io("gt_latent", "BF16", LATENT, optional=True),
        Io("augment_latent", "FP32", LATENT, optional=True),
        Io("num_condition_frames", "INT32", optional=True),
        Io("session", "INT64", optional=True),
        Io("cache_threshold", "FP32", optional=True),
        Io("final", "BOOL", optional=True),
    )
    outputs = (Io("x0", "BF16", LATENT), Io("cache_skipped", "INT32"))
    params = ("checkpoint",)

    def __init__(self, params: Mapping[str, str], device: str) -> None:
        super().__init__(params, device)
        from cosmos_triton.models.checkpoints import latent_shape, read_dit_checkpoint
        from cosmos_triton.models.dit import load_dit
        from cosmos_triton.models.dit_speed import DiTSpeed

        checkpoint = read_dit_checkpoint(Path(params["checkpoint"]))
        if params.get("backend") == "tensorrt":  # a plan built by export/tensorrt_build.py (unverified here)
            from cosmos_triton.models.tensorrt_engine import load_dit_backend, plan_path

            stage = "dit_v2w" if checkpoint.architecture.model_type == "Video2World" else "dit_t2w"
            self.net = load_dit_backend(checkpoint, "tensorrt", plan_path(params["plan_dir"], stage), device)
            return
        net = load_dit(checkpoint, device=self.load_device)
        # also under block streaming: its hooks run eagerly around each compiled block body (models/block_stream.py)
        compile_blocks = {"on": True, "off": False}.get(params.get("compile", "auto"), device.startswith("cuda"))
        speed = DiTSpeed(attention=params.get("attention") or "auto", compile=compile_blocks,
                         fp8=params.get("dit_mode") == "fp8", cache_dir=params.get("compile_cache_dir") or None)
        self.net = speed.apply(net)
        self.hold(net)
        if compile_blocks:  # compile and autotune now, before the server reports ready, never in a request
            envelope = checkpoint.envelope  # warm: every accepted size, or the default one (others then run eager)
            sizes = envelope.resolutions if params.get("warm", "all") == "all" else [
                (envelope.defaults["height"], envelope.defaults["width"])]
            shapes = {latent_shape(n, h, w) for n in envelope.num_video_frames for h, w in sizes}
            with self.memory.call():
                speed.warm_up(self.net, sorted(shapes))

    def run(self, x: Any, sigma: Any, cond: Any, uncond: Any, guidance: float, fps: float,
            gt_latent: Any = None, augment_latent: Any = None, num_condition_frames: int | None = None,
            session: int | None = None, cache_threshold: float | None = None,
            final: bool | None = None) -> dict[str, Any]:
        import torch

        from cosmos_triton.diffusion.conditioning import VideoCondition
        from cosmos_triton.diffusion.guidance import guided_x0

        condition = None
        if gt_latent is not None:
            if augment_latent is None or num_condition_frames is None:
                raise ValueError("gt_latent needs augment_latent and num_condition_frames")
            condition = VideoCondition.from_parts(gt_latent, augment_latent, int(num_condition_frames))
        if not hasattr(self.net, "step"):  # a TensorRT engine: no step cache
            x0 = guided_x0(self.net, x, sigma, cond, uncond, float(guidance), float(fps), condition)
            return {"x0": x0, "cache_skipped": 0}
        with self.net.step(session or 0, float(cache_threshold or 0.0), bool(final)) as step:
            x0 = guided_x0(self.net, x, sigma, cond, uncond, float(guidance), float(fps), condition)
        if x0.is_cuda:  # the GPU work belongs to this call: Triton's compute time then measures it, not the copy
            torch.cuda.synchronize(x0.device)
        return {"x0": x0, "cache_skipped": step.skipped}


class TokenizerEncoderStage(Stage):
    """Video2World: the input frames (already resized, bf16 in [-1, 1]) zero-padded to the clip -> the normalised
    condition latent."""

    kind = "tokenizer_encoder"
    inputs = (Io("condition_frames", "BF16", (-1, 3, -1, -1)), Io("num_video_frames", "INT32"))
    outputs = (Io("condition_latent", "BF16", LATENT),)
    params = ("tokenizer_dir",)

    def __init__(self, params: Mapping[str, str], device: str) -> None:
        super().__init__(params, device)
        from cosmos_triton.models.tokenizer import CosmosVideoTokenizer

        self.tokenizer = self.hold(CosmosVideoTokenizer(Path(params["tokenizer_dir"]), self.load_device))

    def run(self, condition_frames: Any, num_video_frames: int) -> dict[str, Any]:
        from cosmos_triton.media.visual_input import condition_clip

        clip = condition_clip(condition_frames.to(self.device), int(num_video_frames))
        return {"condition_latent": self.tokenizer.encode(clip)}


class TokenizerDecoderStage(Stage):
    """Normalised latent -> uint8 frames on the device (truncation, as the original), so the only large tensor
    crosses processes once and 4x smaller than float."""

    kind = "tokenizer_decoder"
    inputs = (Io("latent", "FP32", LATENT),)
    outputs = (Io("video", "UINT8", FRAMES),)
    params = ("tokenizer_dir",)

    def __init__(self, params: Mapping[str, str], device: str) -> None:
        super().__init__(params, device)
        from cosmos_triton.models.tokenizer import CosmosVideoTokenizer

        self.tokenizer = self.hold(CosmosVideoTokenizer(Path(params["tokenizer_dir"]), self.load_device))

    def run(self, latent: Any) -> dict[str, Any]:
        from cosmos_triton.models.tokenizer import frames_to_uint8

        return {"video": frames_to_uint8(self.tokenizer.decode(latent))}


class VideoGuardrailStage(Stage):
    """Content safety on every frame (any unsafe frame blocks), then face pixelation."""

    kind = "video_guardrail"
    inputs = (Io("video", "UINT8", FRAMES),)
    outputs = (Io("video", "UINT8", FRAMES),)
    params = ("guardrail_dir",)

    def __init__(self, params: Mapping[str, str], device: str) -> None:
        super().__init__(params, device)
        from cosmos_triton.guardrail.runner import VideoGuardrail

        self.guardrail = self.hold(VideoGuardrail(Path(params["guardrail_dir"]), self.load_device))

    def run(self, video: Any) -> dict[str, Any]:
        # the original runs both filters on the uint8 host array: the one device->host copy of the frames
        return {"video": self.guardrail(as_uint8_frames(video))}


class Mp4EncoderStage(Stage):
    """uint8 frames -> H.264 mp4 bytes (libx264, yuv420p, crf 25), as the original's save_video."""

    kind = "mp4_encoder"
    inputs = (Io("video", "UINT8", FRAMES), Io("fps", "INT32"))
    outputs = (Io("mp4", "STRING", binary=True),)
    gpu = False

    def run(self, video: Any, fps: int) -> dict[str, Any]:
        from cosmos_triton.media.mp4 import encode_mp4

        return {"mp4": encode_mp4(as_uint8_frames(video), int(fps))}


STAGE_KINDS: dict[str, type[Stage]] = {
    cls.kind: cls
    for cls in (TextGuardrailStage, Text2WorldUpsamplerStage, Video2WorldUpsamplerStage, TextEncoderStage,
                DiTStepStage, TokenizerEncoderStage, TokenizerDecoderStage, VideoGuardrailStage, Mp4EncoderStage)
}

"""The one place where quality checks and benchmarks call the in-process pipelines.

Everything else takes a plain callable, `generate(prompt, seed, **options) -> uint8 [T, H, W, 3]`, so re-pointing
the pipelines (module layout, an FP8 or step-caching variant) means changing only this file. The prompt upsampler
is disabled: the oracle captions must reach the model as written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from cosmos_triton.deployment import ModelOptions, ServeSettings

Generate = Callable[..., np.ndarray]


def _frames(generation: Any) -> np.ndarray:
    """The uint8 frames [T, H, W, 3] of a cosmos_triton.pipeline.flow.Generation (numpy, or a tensor)."""
    frames = generation.frames
    return frames.cpu().numpy() if hasattr(frames, "cpu") else np.asarray(frames)


def text2world_generator(pipeline: Any) -> Generate:
    """Wrap a Text2World pipeline (`cosmos_triton.pipeline.inprocess.Pipeline(TEXT2WORLD, stages)`)."""

    def generate(prompt: str, seed: int, **options: Any) -> np.ndarray:
        return _frames(pipeline(prompt=prompt, seed=seed, disable_prompt_upsampler=True, **options))

    return generate


def video2world_generator(pipeline: Any) -> Callable[..., np.ndarray]:
    """Wrap a Video2World pipeline: generate(prompt, seed, input_frames uint8 [N, H, W, 3], **options), the frames
    sent as mp4 bytes (a PNG for one frame), as a client would send them; num_input_frames defaults to N if 1 or 9."""
    from cosmos_triton.media.mp4 import encode_mp4

    def generate(prompt: str, seed: int, input_frames: np.ndarray, **options: Any) -> np.ndarray:
        if len(input_frames) == 1:
            import io

            import imageio.v3 as iio

            buf = io.BytesIO()
            iio.imwrite(buf, input_frames[0], extension=".png")
            data = buf.getvalue()
        else:
            data = encode_mp4(input_frames, 24)
        options.setdefault("num_input_frames", 9 if len(input_frames) >= 9 else 1)
        return _frames(pipeline(prompt=prompt, seed=seed, visual_input=data, disable_prompt_upsampler=True,
                                **options))

    return generate


def _pipeline(settings: ServeSettings, model_type_name: str, options: ModelOptions | None) -> Any:
    from cosmos_triton.pipeline.inprocess import InProcessStages, Pipeline
    from cosmos_triton.pipeline.model_types import TEXT2WORLD, VIDEO2WORLD

    model_type = {"text2world": TEXT2WORLD, "video2world": VIDEO2WORLD}[model_type_name]
    return Pipeline(model_type, InProcessStages(settings, options=options))


def load_text2world(settings: ServeSettings, options: ModelOptions | None = None) -> Generate:
    """In-process Text2World on `settings`' checkpoints; `options` e.g. ModelOptions(dit_mode="fp8")."""
    return text2world_generator(_pipeline(settings, "text2world", options))


def load_video2world(settings: ServeSettings, options: ModelOptions | None = None) -> Callable[..., np.ndarray]:
    return video2world_generator(_pipeline(settings, "video2world", options))

"""What a checkpoint accepts per request (its envelope), the defaults, and the validation of a request.

Stdlib and numpy only: the entry points and the tests import this without torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cosmos_triton.errors import RequestError
from cosmos_triton.request.limits import LIMITS

# The original CLI's default negative prompt, verbatim (docs/MATH.md, Negative prompt).
DEFAULT_NEGATIVE_PROMPT = (
    "The video captures a series of frames showing ugly scenes, static with no motion, motion blur, "
    "over-saturation, shaky footage, low resolution, grainy texture, pixelated images, poorly lit areas, "
    "underexposed and overexposed scenes, poor color balance, washed out colors, choppy sequences, jerky "
    "movements, low frame rate, artifacting, color banding, unnatural transitions, outdated special effects, "
    "fake elements, unconvincing visuals, poorly edited content, jump cuts, visual noise, and flickering. "
    "Overall, the video is of poor quality."
)

SEED_MAX = 2**32 - 1  # numpy.RandomState accepts seeds in [0, 2**32 - 1]


@dataclass(frozen=True)
class Envelope:
    """What a checkpoint accepts per request, and the defaults a client gets when it sends nothing."""

    resolutions: tuple[tuple[int, int], ...]  # (height, width)
    num_video_frames: tuple[int, ...]
    fps: tuple[int, int]  # inclusive range
    num_steps: tuple[int, int] = (1, 200)
    guidance: tuple[float, float] = (0.0, 100.0)
    seed: tuple[int, int] = (0, SEED_MAX)
    num_input_frames: tuple[int, ...] = ()  # Video2World only: how many input frames may condition
    defaults: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["resolutions"] = [list(r) for r in self.resolutions]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Envelope:
        return cls(
            resolutions=tuple((int(h), int(w)) for h, w in d["resolutions"]),
            num_video_frames=tuple(int(n) for n in d["num_video_frames"]),
            fps=(int(d["fps"][0]), int(d["fps"][1])),
            num_steps=(int(d["num_steps"][0]), int(d["num_steps"][1])),
            guidance=(float(d["guidance"][0]), float(d["guidance"][1])),
            seed=(int(d["seed"][0]), int(d["seed"][1])),
            num_input_frames=tuple(int(n) for n in d.get("num_input_frames", ())),
            defaults=dict(d.get("defaults", {})),
        )


def _defaults(height: int, width: int) -> dict[str, Any]:
    return {
        "num_steps": 35,
        "guidance": 7.0,
        "seed": 1,
        "height": height,
        "width": width,
        "num_video_frames": 121,
        "fps": 24,
        "negative_prompt": DEFAULT_NEGATIVE_PROMPT,
        "disable_prompt_upsampler": False,  # the original upsamples by default
        "word_limit_to_skip_upsampler": 250,
    }


# The original CLI: only 121 frames (argparse choices), fps 12-40 and these five resolutions (README "Arguments").
ORIGINAL_ENVELOPE = Envelope(
    resolutions=((704, 1280), (1280, 704), (960, 960), (704, 960), (960, 704)),
    num_video_frames=(121,),
    fps=(12, 40),
    defaults=_defaults(704, 1280),
)

# The small checkpoints keep the real frame count and fps range at laptop-sized resolutions.
SMALL_ENVELOPE = Envelope(
    resolutions=((96, 160), (160, 96), (128, 128)),
    num_video_frames=(121,),
    fps=(12, 40),
    defaults=_defaults(96, 160),
)

# Video2World: the original derives the input resize and the output size from the model's state shape, so it
# generates 704x1280 whatever --height/--width say (docs/MATH.md, Video2World conditioning); conditioning on the
# last 1 or 9 frames.
ORIGINAL_V2W_ENVELOPE = Envelope(
    resolutions=((704, 1280),),
    num_video_frames=(121,),
    fps=(12, 40),
    num_input_frames=(1, 9),
    defaults={**_defaults(704, 1280), "num_input_frames": 1},
)
SMALL_V2W_ENVELOPE = Envelope(
    resolutions=((96, 160),),
    num_video_frames=(121,),
    fps=(12, 40),
    num_input_frames=(1, 9),
    defaults={**_defaults(96, 160), "num_input_frames": 1},
)


def _int_in_range(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not float(value).is_integer():
        raise RequestError(name, f"{value!r} is not an integer; accepted: integers in [{lo}, {hi}]")
    value = int(value)
    if not lo <= value <= hi:
        raise RequestError(name, f"{value} is out of range; accepted: integers in [{lo}, {hi}]")
    return value


def validate_request(envelope: Envelope, request: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults for absent fields and check every value; raises RequestError naming the field."""
    values = {**envelope.defaults, **{k: v for k, v in request.items() if v is not None}}
    disable = values.get("disable_prompt_upsampler", False)
    if not isinstance(disable, (bool, np.bool_)):
        raise RequestError("disable_prompt_upsampler", f"{disable!r} is not accepted; accepted: true or false")
    prompt = values.get("prompt") or ""
    # Video2World with the upsampler on writes the prompt from the image and ignores the user's
    # (docs/FORMATS.md, Video2World upsampler)
    prompt_required = not envelope.num_input_frames or bool(disable)
    if not isinstance(prompt, str) or (prompt_required and not prompt.strip()):
        raise RequestError("prompt", "must be a non-empty UTF-8 string")
    if not isinstance(values.get("negative_prompt", ""), str):
        raise RequestError("negative_prompt", "must be a UTF-8 string (empty for no negative prompt)")
    for name in ("prompt", "negative_prompt"):
        text = values.get(name) or ""
        if len(text) > LIMITS.max_prompt_chars:
            raise RequestError(name, f"is {len(text)} characters long; accepted: at most {LIMITS.max_prompt_chars}")
    out = {"prompt": prompt, "negative_prompt": values.get("negative_prompt", ""),
           "disable_prompt_upsampler": bool(disable)}
    out["word_limit_to_skip_upsampler"] = _int_in_range(
        "word_limit_to_skip_upsampler", values.get("word_limit_to_skip_upsampler", 250), 0, 1_000_000)
    out["seed"] = _int_in_range("seed", values["seed"], *envelope.seed)
    out["num_steps"] = _int_in_range("num_steps", values["num_steps"], *envelope.num_steps)
    guidance = float(values["guidance"])
    lo, hi = envelope.guidance
    if not math.isfinite(guidance) or not lo <= guidance <= hi:
        raise RequestError("guidance", f"{values['guidance']!r} is out of range; accepted: numbers in [{lo}, {hi}]")
    out["guidance"] = float(np.float32(guidance))  # FP32 on the wire: in-process runs round the same way
    out["fps"] = _int_in_range("fps", values["fps"], *envelope.fps)
    threshold = values.get("cache_threshold", 0.0)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise RequestError("cache_threshold", f"{threshold!r} is not accepted; accepted: numbers in [0, 1] "
                           "(0: exact, no step cache)")
    out["cache_threshold"] = float(np.float32(threshold))
    frames = values["num_video_frames"]
    if isinstance(frames, bool) or not float(frames).is_integer() or int(frames) not in envelope.num_video_frames:
        accepted = list(envelope.num_video_frames)
        raise RequestError("num_video_frames", f"{frames!r} is not accepted; accepted: {accepted}")
    out["num_video_frames"] = int(frames)
    height, width = values["height"], values["width"]
    if (height, width) not in envelope.resolutions:
        sizes = ", ".join(f"{h}x{w}" for h, w in envelope.resolutions)
        raise RequestError("height/width", f"{height}x{width} is not accepted; accepted (height x width): {sizes}")
    out["height"], out["width"] = int(height), int(width)
    if envelope.num_input_frames:
        n = values.get("num_input_frames")
        if isinstance(n, bool) or n is None or not float(n).is_integer() or int(n) not in envelope.num_input_frames:
            accepted = list(envelope.num_input_frames)
            raise RequestError("num_input_frames", f"{n!r} is not accepted; accepted: {accepted}")
        out["num_input_frames"] = int(n)
    return out

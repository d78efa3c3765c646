"""Caps on what one request may ask of the server, checked before any heavy work: each refusal names the limit.

The original has none of these (it reads local files); a shared server needs them: a 1 MB prompt held the text
guardrail for minutes and an 8000x8000 PNG took 14 s and 1 GB to decode before anything looked at its size.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_prompt_chars: int = 4096  # T5 reads 512 tokens; the upsampler skips prompts over 250 words anyway
    max_visual_input_bytes: int = 64 << 20
    max_frame_pixels: int = 4096 * 4096  # per decoded frame, read from the file header before decoding
    max_video_frames: int = 2400  # frames in an mp4 input (100 s at 24 fps); only the last 1 or 9 are used


LIMITS = Limits()

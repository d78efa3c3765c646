"""Render scenes to pixels with torch, vectorised over clips, frames and pixels (CPU or GPU).

Per-frame tracks (object centre, size, colour, camera offset) are computed in numpy float64 from the scene's
numbers; the pixels are computed in float32 on the chosen device and rounded to uint8, so a scene gives the same
frames on every run on one device (and, up to float32 rounding of edge pixels, on another).
Coordinates are in frame-height units (x to the right, y down); edges are anti-aliased over one pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cosmos_triton.synthetic.scenes import Scene, colour_rgb

NUM_FRAMES = 121  # the tokenizer's chunk: every clip spans 121 frames, whatever subset is rendered
TRIANGLE_SCALE = 1.25  # so that the shapes of one `size` cover similar areas
DIAMOND_SCALE = 1.3
TEXTURE_SHARPNESS = 3.0


def scene_tracks(scene: Scene, frames: np.ndarray, total_frames: int = NUM_FRAMES) -> dict[str, np.ndarray]:
    """Screen-space centre x, y, half-size, RGB colour and camera x-offset at each frame index in `frames`."""
    s = np.asarray(frames, dtype=np.float64) / max(total_frames - 1, 1)
    (x0, y0), (x1, y1) = scene.start, scene.end
    x, y = np.full_like(s, x0), np.full_like(s, y0)
    size = np.full_like(s, scene.size)
    if scene.motion == "move":
        x, y = x0 + (x1 - x0) * s, y0 + (y1 - y0) * s
    elif scene.motion == "bounce":
        p = scene.extra.get("phase", 0.0) + s * scene.cycles
        if scene.direction == "horizontal":
            x = x0 + (x1 - x0) * (1 - np.abs(2 * (p % 1.0) - 1))
        else:  # floor at y1, top of the bounce at y0
            y = y1 - (y1 - y0) * np.abs(np.sin(np.pi * p))
    elif scene.motion in ("grow", "shrink"):
        size = scene.size * (scene.size_to / scene.size) ** s
    rgb = np.tile(np.array(colour_rgb(scene.colour)), (len(s), 1))
    if scene.motion == "recolour":
        assert scene.colour_to is not None, "a recolour scene names its final colour"
        w = np.clip((s - 0.25) / 0.5, 0, 1)
        w = (w * w * (3 - 2 * w))[:, None]
        rgb = (1 - w) * rgb + w * np.array(colour_rgb(scene.colour_to))[None]
    cam = np.zeros_like(s)
    if scene.camera == "pan_left":
        cam = -scene.camera_speed * s
    elif scene.camera == "pan_right":
        cam = scene.camera_speed * s
    return {"x": x - cam, "y": y, "size": size, "rgb": rgb, "cam": cam}


def _shape_sdf(shape: str, dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Signed distance (frame heights, negative inside) to the shape of half-size r centred at the origin."""
    if shape == "circle":
        return torch.sqrt(dx * dx + dy * dy) - r
    if shape == "square":
        return torch.maximum(dx.abs(), dy.abs()) - r
    if shape == "diamond":
        return (dx.abs() + dy.abs() - DIAMOND_SCALE * r) / math.sqrt(2.0)
    if shape == "triangle":  # pointing up (y grows downwards): the base and the two slanted sides
        r = TRIANGLE_SCALE * r
        base = dy - r / 2
        sides = 0.8660254 * dx.abs() - 0.5 * dy - r / 2
        return torch.maximum(base, sides)
    raise ValueError(f"unknown shape {shape!r}")


def _background_mix(scene: Scene, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
    """Weight of the second background colour at world coordinates (u, v), or None for a plain background."""
    if scene.background == "plain":
        return None
    c, s = math.cos(scene.bg_angle), math.sin(scene.bg_angle)
    along = u * c + v * s
    k = 2 * math.pi / scene.bg_period
    if scene.background == "stripes":
        return 0.5 + 0.5 * torch.tanh(TEXTURE_SHARPNESS * torch.sin(k * along))
    if scene.background == "checker":
        return 0.5 + 0.5 * torch.tanh(2 * TEXTURE_SHARPNESS * torch.sin(k * u) * torch.sin(k * v))
    if scene.background == "gradient":
        centre = 0.5 * (scene.aspect * c + s)
        return (0.5 + (along - centre) / 1.6).clamp(0, 1)
    raise ValueError(f"unknown background {scene.background!r}")


@torch.no_grad()
def render_clip(scene: Scene, height: int, width: int, frames: Sequence[int] | np.ndarray | None = None,
                device: str | torch.device = "cpu", total_frames: int = NUM_FRAMES) -> torch.Tensor:
    """uint8 frames [T, H, W, 3] of one scene (all `total_frames` frames unless `frames` picks some)."""
    frames = np.arange(total_frames) if frames is None else np.asarray(frames)
    tr = scene_tracks(scene, frames, total_frames)
    f32: dict[str, Any] = {"dtype": torch.float32, "device": device}
    ys = (torch.arange(height, **f32) + 0.5) / height  # frame-height units
    xs = (torch.arange(width, **f32) + 0.5) / height
    cx, cy = torch.tensor(tr["x"], **f32), torch.tensor(tr["y"], **f32)
    r, cam = torch.tensor(tr["size"], **f32), torch.tensor(tr["cam"], **f32)
    dx = xs[None, None, :] - cx[:, None, None]  # [T, 1, W]
    dy = ys[None, :, None] - cy[:, None, None]  # [T, H, 1]
    sdf = _shape_sdf(scene.shape, dx, dy, r[:, None, None])
    alpha = (0.5 - sdf * height).clamp(0, 1)[..., None]  # [T, H, W, 1], one-pixel anti-aliasing
    u = xs[None, None, :] + cam[:, None, None]  # background moves with the camera
    v = ys[None, :, None].expand(len(frames), height, 1)
    mix = _background_mix(scene, u, v)
    c1 = torch.tensor(scene.bg_colour, **f32)
    if mix is None:
        bg = c1.expand(len(frames), height, width, 3)
    else:
        bg = c1 + mix.expand(len(frames), height, width)[..., None] * (torch.tensor(scene.bg_colour2, **f32) - c1)
    rgb = torch.tensor(tr["rgb"], **f32)[:, None, None, :]
    out = bg * (1 - alpha) + rgb * alpha
    return (out * 255).round().clamp(0, 255).to(torch.uint8)


def render_batch(scenes: Sequence[Scene], height: int, width: int, frames: Sequence[int] | None = None,
                 device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 [B, T, H, W, 3] of several scenes."""
    return torch.stack([render_clip(s, height, width, frames, device) for s in scenes])


def to_model_input(frames_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> float [B, 3, T, H, W] in [-1, 1) with the original's x / 128 - 1
    (as cosmos_triton.media.visual_input.normalize_frames)."""
    return frames_uint8.permute(0, 4, 1, 2, 3).float() / 128.0 - 1.0

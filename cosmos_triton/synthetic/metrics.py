"""Quality measures of generated frames: named-colour presence, centroid motion direction, PSNR and SSIM.

All take uint8 frames [T, H, W, 3] (numpy or torch). Colour is judged by hue: a pixel counts as a named colour when
it is saturated and bright enough (backgrounds of the synthetic data never are) and its hue is nearest that
colour's (scenes.COLOUR_HUES). A colour is present in a frame when it covers at least `min_fraction` of the frame
AND is at least half of all the saturated pixels: coloured noise, whose saturated pixels spread over every hue,
fails the second condition.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cosmos_triton.synthetic.scenes import COLOUR_HUES, COLOURS

MIN_SATURATION = 0.45
MIN_VALUE = 0.35
MIN_FRACTION = 0.004  # of the frame's pixels (61 at 96x160; an object covers ~200-900)
MIN_DOMINANCE = 0.5  # of all saturated pixels
PRESENT_FRAMES = 0.75  # "present in most frames"
MIN_TRAVEL = 0.15  # net centroid displacement along the named axis, as a fraction of that frame extent
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _as_tensor(frames) -> torch.Tensor:
    t = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(frames))
    if t.dtype != torch.uint8 or t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [T, H, W, 3], got {t.dtype} {tuple(t.shape)}")
    return t


def _hue_boundaries() -> tuple[torch.Tensor, torch.Tensor]:
    """Hue bin edges (midpoints between neighbouring colour hues on the circle) and the colour index of each bin."""
    order = sorted(range(len(COLOURS)), key=lambda i: COLOUR_HUES[COLOURS[i]])
    hues = [COLOUR_HUES[COLOURS[i]] for i in order]
    edges = [(a + b) / 2 for a, b in itertools.pairwise(hues)]
    wrap = (hues[-1] + hues[0] + 360) / 2 % 360  # between the last hue and the first one + 360
    all_edges = sorted([*edges, wrap])  # each bin is labelled with the hue nearest its middle
    labels = []
    for k in range(len(all_edges) + 1):
        lo = all_edges[k - 1] if k else all_edges[-1] - 360
        hi = all_edges[k] if k < len(all_edges) else all_edges[0] + 360
        mid = ((lo + hi) / 2) % 360
        dist = [min(abs(mid - h), 360 - abs(mid - h)) for h in hues]
        labels.append(order[int(np.argmin(dist))])
    return torch.tensor(all_edges, dtype=torch.float32), torch.tensor(labels)


_EDGES, _LABELS = _hue_boundaries()


def hue_classes(frames) -> torch.Tensor:
    """[T, H, W] int64: index into COLOURS of each pixel's nearest hue, or -1 for unsaturated / dark pixels."""
    rgb = _as_tensor(frames)
    mx, argmax = rgb.max(dim=-1)
    mn = rgb.min(dim=-1).values
    r, g, b = (c.float() for c in rgb.unbind(-1))
    mxf = mx.float()
    delta = mxf - mn.float()
    valid = (delta >= MIN_SATURATION * mxf) & (mxf >= MIN_VALUE * 255) & (delta > 0)
    d = delta.clamp_min(1.0)
    hue = torch.where(argmax == 0, torch.remainder((g - b) / d, 6.0),
                      torch.where(argmax == 1, (b - r) / d + 2, (r - g) / d + 4)) * 60.0
    cls = _LABELS[torch.bucketize(hue, _EDGES, right=True)]
    return torch.where(valid, cls, torch.full_like(cls, -1))


def colour_masks(frames, colour: str, classes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean [T, H, W] mask of the named colour, and per-frame presence [T]. `classes`: hue_classes(frames),
    when already computed."""
    cls = hue_classes(frames) if classes is None else classes
    mask = cls == COLOURS.index(colour)
    count = mask.flatten(1).sum(1).float()
    saturated = (cls >= 0).flatten(1).sum(1).float()
    pixels = cls.shape[1] * cls.shape[2]
    present = (count >= MIN_FRACTION * pixels) & (count >= MIN_DOMINANCE * saturated.clamp_min(1))
    return mask, present


def presence_fraction(frames, colour: str, classes: torch.Tensor | None = None) -> float:
    """Fraction of frames in which the named colour is present."""
    return float(colour_masks(frames, colour, classes)[1].float().mean())


def centroid_track(frames, colour: str, classes: torch.Tensor | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame indices where the colour is present, and its centroid x, y (pixels) there."""
    mask, present = colour_masks(frames, colour, classes)
    t = torch.nonzero(present).flatten()
    m = mask[t].float()
    h, w = m.shape[1:]
    area = m.flatten(1).sum(1)
    ys = (m.sum(2) * torch.arange(h)).sum(1) / area
    xs = (m.sum(1) * torch.arange(w)).sum(1) / area
    return t.numpy(), xs.numpy(), ys.numpy()


def motion_direction(frames, colour: str, min_travel: float = MIN_TRAVEL, classes: torch.Tensor | None = None
                     ) -> tuple[str | None, float, float]:
    """('left' | 'right' | 'up' | 'down' | None, dx, dy): the least-squares centroid displacement of the named
    colour over the clip (pixels); None when the colour is present in fewer than half the frames or the dominant
    displacement is under `min_travel` of that frame extent."""
    t, xs, ys = centroid_track(frames, colour, classes)
    n_frames, h, w = _as_tensor(frames).shape[:3]
    if len(t) < max(2, n_frames // 2):
        return None, 0.0, 0.0
    span = float(n_frames - 1)
    dx = float(np.polyfit(t, xs, 1)[0]) * span
    dy = float(np.polyfit(t, ys, 1)[0]) * span
    if abs(dx) / w >= abs(dy) / h:
        direction = ("right" if dx > 0 else "left") if abs(dx) >= min_travel * w else None
    else:
        direction = ("down" if dy > 0 else "up") if abs(dy) >= min_travel * h else None
    return direction, dx, dy


@dataclass(frozen=True)
class Adherence:
    colour: str
    direction: str
    presence: float  # fraction of frames with the colour present
    colour_ok: bool  # presence >= PRESENT_FRAMES
    measured_direction: str | None
    direction_ok: bool
    dx: float
    dy: float

    def to_dict(self) -> dict:
        return asdict(self)


def adherence(frames, colour: str, direction: str) -> Adherence:
    """How well a video shows 'a <colour> ... moving <direction>'."""
    classes = hue_classes(frames)
    presence = presence_fraction(frames, colour, classes)
    measured, dx, dy = motion_direction(frames, colour, classes=classes)
    return Adherence(colour, direction, presence, presence >= PRESENT_FRAMES, measured, measured == direction, dx, dy)


def psnr(a, b, peak: float = 255.0) -> float:
    """10 log10(peak^2 / MSE) over all values; inf for identical inputs."""
    x = torch.as_tensor(np.asarray(a), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(b), dtype=torch.float64)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    mse = float(((x - y) ** 2).mean())
    return float("inf") if mse == 0 else 10.0 * float(np.log10(peak * peak / mse))


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Normalised 1-D Gaussian weights."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def ssim(a, b, peak: float = 255.0) -> float:
    """Mean SSIM (Wang et al. 2004): 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, 'valid' windows only,
    each colour channel of each frame separately, then averaged. Frames [T, H, W, 3] (or [H, W, 3])."""
    x = torch.as_tensor(np.asarray(a), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(b), dtype=torch.float64)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.ndim == 3:
        x, y = x[None], y[None]
    # [T, H, W, C] -> [T*C, 1, H, W]
    x = x.permute(0, 3, 1, 2).reshape(-1, 1, *x.shape[1:3])
    y = y.permute(0, 3, 1, 2).reshape(-1, 1, *y.shape[1:3])
    g = gaussian_window()
    wh, ww = g.view(1, 1, -1, 1), g.view(1, 1, 1, -1)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(z, wh), ww)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = (SSIM_K1 * peak) ** 2, (SSIM_K2 * peak) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())

"""Quality metrics against hand-computed cases: hue classes, colour presence, centroid direction, PSNR, SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cosmos_triton.synthetic import metrics
from cosmos_triton.synthetic.metrics import (
    adherence,
    gaussian_window,
    hue_classes,
    motion_direction,
    presence_fraction,
    psnr,
    ssim,
)
from cosmos_triton.synthetic.scenes import COLOURS, colour_rgb


def _rgb(name: str) -> list[int]:
    return [round(255 * c) for c in colour_rgb(name)]


def test_hue_classes_of_the_palette_grey_and_dark_pixels():
    pixels = [_rgb(c) for c in COLOURS] + [[128, 128, 128], [60, 10, 10], [200, 180, 170]]
    frame = np.array(pixels, dtype=np.uint8).reshape(1, 1, -1, 3)
    # the palette classifies as itself; grey (no saturation), dark red (V 0.24) and a muted beige do not count
    assert hue_classes(frame)[0, 0].tolist() == [*range(len(COLOURS)), -1, -1, -1]


def _square_video(colour: str, xs: list[int], y: int = 40, size: int = 16, h: int = 96, w: int = 160) -> np.ndarray:
    frames = np.full((len(xs), h, w, 3), 90, dtype=np.uint8)
    for t, x in enumerate(xs):
        frames[t, y : y + size, x : x + size] = _rgb(colour)
    return frames


def test_presence_needs_area_and_dominance():
    video = _square_video("red", [10, 20, 30, 40])
    assert presence_fraction(video, "red") == 1.0
    assert presence_fraction(video, "blue") == 0.0
    tiny = _square_video("red", [10, 20], size=7)  # 49 px < 0.4 % of 15360
    assert presence_fraction(tiny, "red") == 0.0
    # as much blue as red: red is half of the saturated pixels, still dominant; with more blue it is not
    both = video.copy()
    both[:, 70:86, 100:116] = _rgb("blue")
    assert presence_fraction(both, "red") == 1.0
    both[:, 70:90, 100:120] = _rgb("blue")
    assert presence_fraction(both, "red") == 0.0


def test_coloured_noise_has_no_dominant_colour():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (8, 96, 160, 3), dtype=np.uint8)
    assert all(presence_fraction(noise, c) == 0.0 for c in COLOURS)


@pytest.mark.parametrize(("xs", "ys", "want"), [
    ([10 + 8 * t for t in range(11)], [40] * 11, "right"),
    ([110 - 8 * t for t in range(11)], [40] * 11, "left"),
    ([60] * 11, [70 - 5 * t for t in range(11)], "up"),
    ([60] * 11, [10 + 5 * t for t in range(11)], "down"),
    ([60 + (t % 2) for t in range(11)], [40] * 11, None),  # jitter, no travel
])
def test_centroid_direction(xs, ys, want):
    frames = np.full((len(xs), 96, 160, 3), 90, dtype=np.uint8)
    for t, (x, y) in enumerate(zip(xs, ys, strict=True)):
        frames[t, y : y + 16, x : x + 16] = _rgb("green")
    direction, dx, dy = motion_direction(frames, "green")
    assert direction == want
    # a square moving at constant speed: the least-squares displacement is exactly the travel
    assert dx == pytest.approx(xs[-1] - xs[0], abs=1e-6) and dy == pytest.approx(ys[-1] - ys[0], abs=1e-6)


def test_travel_below_the_minimum_is_no_direction():
    xs = [60 + 2 * t for t in range(11)]  # 20 px of 160: under 15 % of the width
    assert motion_direction(_square_video("cyan", xs), "cyan")[0] is None
    xs = [60 + 3 * t for t in range(11)]  # 30 px: over it
    assert motion_direction(_square_video("cyan", xs), "cyan")[0] == "right"


def test_direction_needs_the_colour_in_half_the_frames():
    video = _square_video("red", [10 + 10 * t for t in range(10)])
    video[:6] = 90  # red only in 4 of 10 frames
    assert motion_direction(video, "red")[0] is None
    result = adherence(video, "red", "right")
    assert result.presence == pytest.approx(0.4) and not result.colour_ok and not result.direction_ok


def test_psnr_hand_computed():
    a = np.zeros((2, 2, 2, 3), dtype=np.uint8)
    b = a.copy()
    b[0, 0, 0, 0] = 10  # MSE = 100 / 24
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 * 24 / 100))
    assert psnr(a, a) == float("inf")


def test_ssim_of_two_flat_images_is_the_luminance_term():
    a = np.full((11, 11, 3), 50, dtype=np.uint8)
    b = np.full((11, 11, 3), 100, dtype=np.uint8)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    want = (2 * 50 * 100 + c1) / (50**2 + 100**2 + c1) * (0 + c2) / (0 + c2)
    assert ssim(a, b) == pytest.approx(want, rel=1e-12)
    assert ssim(a, a) == pytest.approx(1.0)


def test_ssim_against_the_formula_written_out_per_window():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (12, 13, 1)).astype(np.uint8)
    y = np.clip(x.astype(int) + rng.integers(-40, 40, x.shape), 0, 255).astype(np.uint8)
    g = gaussian_window().numpy()
    w2 = np.outer(g, g)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for i in range(12 - 10):
        for j in range(13 - 10):
            px, py = x[i : i + 11, j : j + 11, 0].astype(float), y[i : i + 11, j : j + 11, 0].astype(float)
            mx, my = (w2 * px).sum(), (w2 * py).sum()
            vx, vy = (w2 * (px - mx) ** 2).sum(), (w2 * (py - my) ** 2).sum()
            cov = (w2 * (px - mx) * (py - my)).sum()
            values.append((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    assert ssim(np.repeat(x, 3, -1), np.repeat(y, 3, -1)) == pytest.approx(np.mean(values), rel=1e-9)


def test_gaussian_window_is_normalised_and_symmetric():
    g = gaussian_window().numpy()
    assert g.sum() == pytest.approx(1.0) and np.allclose(g, g[::-1]) and g.argmax() == metrics.SSIM_WINDOW // 2

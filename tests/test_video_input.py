"""Video2World input handling: decoding from bytes, last-N selection, /128 - 1, bicubic-antialias resize, padding."""

from __future__ import annotations

import io
import os
import tempfile

import imageio.v2 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from cosmos_triton.errors import RequestError
from cosmos_triton.media.visual_input import (
    decode_visual_input,
    normalize_frames,
    num_condition_latent_frames,
    prepare_condition_video,
    resize_bicubic_antialias,
    select_input_frames,
)

BF16_ULP_BELOW_2 = 2.0**-7  # bf16 spacing for 1 <= |x| < 2; bicubic overshoot can leave [-1, 1] slightly
# One colour per frame, far apart in RGB so that x264's yuv420p round trip cannot confuse them.
COLOURS = np.array(
    [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255], [0, 255, 255],
     [0, 0, 0], [255, 255, 255], [128, 0, 0], [0, 128, 0], [0, 0, 128], [128, 128, 128]],
    dtype=np.uint8,
)  # fmt: skip


def _image_bytes(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **kwargs)
    return buf.getvalue()


def _mp4_bytes(frames: np.ndarray) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "clip.mp4")
        # quality 10 -> -crf 0 for libx264: near-lossless apart from yuv420p conversion
        iio.mimwrite(path, frames, format="FFMPEG", fps=24, codec="libx264", quality=10, macro_block_size=1)
        with open(path, "rb") as f:
            return f.read()


def _colour_video(n: int, size: int = 32) -> bytes:
    frames = np.broadcast_to(COLOURS[:n, None, None, :], (n, size, size, 3))
    return _mp4_bytes(np.ascontiguousarray(frames))


def _colour_index(frame: np.ndarray) -> int:
    mean = frame.reshape(-1, 3).mean(axis=0)
    return int(np.argmin(np.abs(COLOURS.astype(float) - mean).sum(axis=1)))


def _pil_bicubic(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reference: Pillow's antialiased bicubic (Keys a = -0.5), one float ("F") channel at a time."""
    return np.stack([np.asarray(Image.fromarray(c, mode="F").resize((width, height), Image.BICUBIC)) for c in x])


# --- resize ---------------------------------------------------------------------------------------------------------

RESIZE_CASES = [(40, 72, 16, 32), (37, 53, 80, 112), (100, 130, 64, 48), (180, 320, 88, 160)]


@pytest.mark.parametrize("src_h,src_w,dst_h,dst_w", RESIZE_CASES)
def test_resize_is_pillow_bicubic_antialias(src_h: int, src_w: int, dst_h: int, dst_w: int) -> None:
    x = np.random.default_rng(0).uniform(-1, 1, (3, src_h, src_w)).astype(np.float32)
    ref = _pil_bicubic(x, dst_h, dst_w)
    # float64: same algorithm as Pillow (which uses double coefficients), borders included; only the final
    # float32 rounding of Pillow's output remains (~6e-8 measured).
    ours64 = resize_bicubic_antialias(torch.from_numpy(x).double()[None], dst_h, dst_w)[0].numpy()
    assert np.abs(ours64 - ref).max() < 1e-6
    # float32 (the path used, as torchvision does): torch computes tap centres and weights in float32, so a
    # centre near pixel p is off by ~p * 2^-24; with kernel slope <= 1.4 and <= 4*scale taps of |x| <= 1 that
    # stays far below 1e-4 for these sizes (measured <= 7e-6).
    ours32 = resize_bicubic_antialias(torch.from_numpy(x)[None], dst_h, dst_w)[0].numpy()
    assert np.abs(ours32 - ref).max() < 1e-4


def test_full_size_resize_matches_pillow_within_one_bf16_ulp() -> None:
    # A realistic 4:3 input stretched to 704x1280: the bf16 clip may differ from bf16(Pillow) only where
    # float32-vs-double weight rounding (measured ~4e-5) straddles a bf16 rounding boundary, i.e. by one ulp.
    frame = np.random.default_rng(1).integers(0, 256, (1, 240, 320, 3), dtype=np.uint8)
    clip = prepare_condition_video(frame, 704, 1280, num_video_frames=2)
    ref = _pil_bicubic(frame[0].transpose(2, 0, 1).astype(np.float32) / 128.0 - 1.0, 704, 1280)
    ref_bf16 = torch.from_numpy(ref).to(torch.bfloat16).float()
    assert (clip[0, :, 0].float() - ref_bf16).abs().max().item() <= BF16_ULP_BELOW_2


def test_resize_stretches_without_crop() -> None:
    # Left half black, right half white, wider than the target aspect: a stretch keeps the edge in the middle.
    frame = np.zeros((1, 20, 80, 3), dtype=np.uint8)
    frame[:, :, 40:] = 255
    clip = prepare_condition_video(frame, 16, 16, num_video_frames=1)[0, 0, 0].float()
    assert torch.all(clip[:, :7] < -0.9) and torch.all(clip[:, 9:] > 0.9)


# --- normalisation and clip layout ----------------------------------------------------------------------------------


def test_normalisation_is_x_over_128_minus_1() -> None:
    values = np.arange(256, dtype=np.uint8)
    frames = np.repeat(values[None, :, None, None], 3, axis=3)  # [1, 256, 1, 3]
    got = prepare_condition_video(frames, 256, 1, num_video_frames=1)[0, 0, 0, :, 0]  # same size: no resize
    assert got.dtype == torch.bfloat16
    assert got[255].item() == 0.9921875 and got[0].item() == -1.0 and got[128].item() == 0.0
    # The original: float64 x / 128.0 - 1.0, then .bfloat16(); every value is exact, so all 256 match bitwise.
    original = torch.from_numpy(values.astype(np.float64) / 128.0 - 1.0).bfloat16()
    assert torch.equal(got, original)
    assert torch.equal(normalize_frames(frames)[0, 0, :, 0], original.float())


@pytest.mark.parametrize("n", [1, 9])
def test_clip_is_121_frames_with_zeros_after_the_inputs(n: int) -> None:
    frames = np.full((n, 24, 40, 3), 255, dtype=np.uint8)
    clip = prepare_condition_video(frames, 16, 32)
    assert clip.shape == (1, 3, 121, 16, 32) and clip.dtype == torch.bfloat16
    assert torch.all(clip[:, :, :n] == 0.9921875)
    assert torch.all(clip[:, :, n:] == 0)


def test_num_condition_latent_frames() -> None:
    assert num_condition_latent_frames(1) == 1
    assert num_condition_latent_frames(9) == 2


# --- frame selection ------------------------------------------------------------------------------------------------


def test_last_frames_of_a_video_are_selected() -> None:
    frames = decode_visual_input(_colour_video(12), "clip.mp4")
    assert frames.shape == (12, 32, 32, 3) and frames.dtype == np.uint8
    assert [_colour_index(f) for f in frames] == list(range(12))  # decoded in order, codec error tolerated
    assert [_colour_index(f) for f in select_input_frames(frames, 9)] == list(range(3, 12))
    assert [_colour_index(f) for f in select_input_frames(frames, 1)] == [11]
    tail = decode_visual_input(_colour_video(12), keep_last=9)
    assert [_colour_index(f) for f in tail] == list(range(3, 12))


def test_too_few_frames_is_an_error_like_the_original() -> None:
    image = decode_visual_input(_image_bytes(np.zeros((8, 8, 3), np.uint8), "PNG"))
    with pytest.raises(RequestError, match=r"1 frame.*needs at least 9") as err:
        select_input_frames(image, 9)
    assert err.value.field == "visual_input"
    with pytest.raises(RequestError, match=r"5 frame.*needs at least 9"):
        select_input_frames(np.zeros((5, 8, 8, 3), np.uint8), 9)


@pytest.mark.parametrize("bad", [0, 2, 8, 121, True])
def test_num_input_frames_must_be_1_or_9(bad: int) -> None:
    with pytest.raises(RequestError, match=r"accepted: \[1, 9\]") as err:
        select_input_frames(np.zeros((121, 8, 8, 3), np.uint8), bad)
    assert err.value.field == "num_input_frames"


# --- decoding -------------------------------------------------------------------------------------------------------


def test_rgba_png_is_composited_over_white() -> None:
    rgba = np.array([[[150, 100, 0, 100], [10, 20, 30, 0], [10, 20, 30, 255], [0, 0, 0, 128]]], dtype=np.uint8)
    got = decode_visual_input(_image_bytes(rgba, "PNG"), "x.png")
    assert got.shape == (1, 1, 4, 3)
    a = rgba[..., 3:] / 255.0
    expected = np.floor(rgba[..., :3] * a + 255 * (1 - a) + 1e-9).astype(np.uint8)  # truncation, not rounding
    assert np.array_equal(got[0], expected)
    assert got[0, 0, 0, 0] == 213  # 150*100/255 + 155 = 213.8 -> truncated, as the original's astype(uint8)
    assert np.array_equal(got[0, 0, 1], [255, 255, 255]) and np.array_equal(got[0, 0, 2], [10, 20, 30])


@pytest.mark.parametrize(
    "fmt,kwargs,tol", [("JPEG", {"quality": 95}, 8), ("PNG", {}, 0), ("WEBP", {"lossless": True}, 0)]
)
def test_images_decode_from_bytes(fmt: str, kwargs: dict, tol: int) -> None:
    rgb = np.zeros((16, 24, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 60, 20
    got = decode_visual_input(_image_bytes(rgb, fmt, **kwargs))  # no filename: the content decides
    assert got.shape == (1, 16, 24, 3) and got.dtype == np.uint8
    assert np.abs(got[0].astype(int) - rgb).max() <= tol


def test_grayscale_images_become_rgb() -> None:
    grey = np.full((6, 10), 77, dtype=np.uint8)
    assert np.all(decode_visual_input(_image_bytes(grey, "PNG")) == 77)
    grey_alpha = np.stack([grey, np.zeros_like(grey)], axis=-1)  # fully transparent -> white
    got = decode_visual_input(_image_bytes(grey_alpha, "PNG"))
    assert got.shape == (1, 6, 10, 3) and np.all(got == 255)


def test_mp4_decodes_from_bytes() -> None:
    got = decode_visual_input(_colour_video(3, size=16))
    assert got.shape == (3, 16, 16, 3) and got.dtype == np.uint8


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "empty"),
        (b"definitely not an image or a video", "unsupported format.*accepted: jpg/jpeg, png or webp"),
        (b"GIF89a" + bytes(64), "unsupported format \\(a gif file\\)"),
        (b"\x89PNG\r\n\x1a\n" + bytes(40), "could not decode the png image"),
        (b"\x00\x00\x00\x18ftypisom" + bytes(64), "could not decode the mp4 video"),
    ],
)
def test_bad_input_bytes_raise_request_error(data: bytes, message: str) -> None:
    with pytest.raises(RequestError, match=message) as err:
        decode_visual_input(data, "input.bin")
    assert err.value.field == "visual_input"


def test_truncated_mp4_raises_request_error() -> None:
    data = _colour_video(4)
    with pytest.raises(RequestError) as err:
        decode_visual_input(data[: len(data) // 3])
    assert err.value.field == "visual_input"

"""mp4 encode/decode: frame count, size, fps and codec survive the round trip; bad input fails loudly."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cosmos_triton.media.mp4 import CODEC, CRF, PIX_FMT, decode_mp4, encode_mp4, probe_mp4

ROOT = Path(__file__).resolve().parents[1]


def smooth_video(t: int, h: int, w: int) -> np.ndarray:
    """Slowly moving gradients: compressible, so crf 25 should reproduce them closely."""
    tt = np.arange(t, dtype=np.float64)[:, None, None]
    yy = np.arange(h, dtype=np.float64)[None, :, None]
    xx = np.arange(w, dtype=np.float64)[None, None, :]
    r = 128 + 90 * np.sin(xx / 25 + tt / 15) + 0 * yy
    g = 128 + 90 * np.cos(yy / 20 - tt / 18) + 0 * xx
    b = 128 + 60 * np.sin((xx + yy) / 30 + tt / 20)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def video_121() -> np.ndarray:
    return smooth_video(121, 96, 160)


def test_pinned_parameters_match_the_original() -> None:
    # quality=5 -> int((1 - 0.5) * 51) in imageio-ffmpeg's libx264 branch
    assert (CODEC, PIX_FMT, CRF) == ("libx264", "yuv420p", 25)


@pytest.mark.parametrize("fps", [24, 12, 40])
def test_round_trip_keeps_frames_size_fps(video_121: np.ndarray, fps: int) -> None:
    data = encode_mp4(video_121, fps)
    assert data[4:8] == b"ftyp"  # an ISO-BMFF (mp4) file, not e.g. raw h264

    info = probe_mp4(data)
    assert info == {"frames": 121, "height": 96, "width": 160, "fps": float(fps), "codec": "h264", "pix_fmt": PIX_FMT}

    frames, fps_read = decode_mp4(data)
    assert frames.shape == video_121.shape
    assert frames.dtype == np.uint8
    assert fps_read == fps
    assert psnr(frames, video_121) > 35.0  # ~40 dB observed at crf 25


def test_encoder_is_libx264_at_crf_25(video_121: np.ndarray) -> None:
    # x264 embeds its settings in an SEI message, so the stream itself proves which encoder and crf ran.
    data = encode_mp4(video_121[:9], 24)
    assert b"x264" in data
    assert b"crf=25.0" in data


@pytest.mark.parametrize("t", [1, 2, 9, 17])
def test_frame_count_is_exact(t: int) -> None:
    # B-frames and the mp4 edit list must neither drop nor add frames at either end.
    video = smooth_video(t, 32, 48)
    data = encode_mp4(video, 24)
    frames, _ = decode_mp4(data)
    assert probe_mp4(data)["frames"] == t
    assert frames.shape == (t, 32, 48, 3)


def test_frames_stay_in_order() -> None:
    # Distinct flat grey levels per frame: decoding must return them in the same order.
    levels = np.linspace(20, 235, 12).astype(np.uint8)
    video = np.broadcast_to(levels[:, None, None, None], (12, 16, 16, 3)).copy()
    frames, _ = decode_mp4(encode_mp4(video, 24))
    means = frames.reshape(12, -1).mean(axis=1)
    assert np.all(np.abs(means - levels) < 4)


def test_encoding_is_deterministic_on_one_machine(video_121: np.ndarray) -> None:
    # Bytes can differ between machines (x264 picks its thread count from the CPU count), not between calls.
    assert encode_mp4(video_121[:17], 24) == encode_mp4(video_121[:17], 24)


def test_non_contiguous_input_is_accepted(video_121: np.ndarray) -> None:
    view = video_121[:9, ::2, ::2]  # strided view, 48x80
    frames, _ = decode_mp4(encode_mp4(view, 24))
    assert frames.shape == (9, 48, 80, 3)


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        (np.zeros((2, 16, 16, 3), np.float32), "uint8"),
        (np.zeros((16, 16, 3), np.uint8), "4-D"),
        (np.zeros((2, 16, 16, 4), np.uint8), "3 \\(RGB\\) channels"),
        (np.zeros((0, 16, 16, 3), np.uint8), "at least one frame"),
        (np.zeros((2, 15, 16, 3), np.uint8), "even"),
        (np.zeros((2, 16, 17, 3), np.uint8), "even"),
    ],
)
def test_bad_frames_raise_value_error(frames: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_mp4(frames, 24)


@pytest.mark.parametrize("fps", [0, -24, 24.5, True, "24"])
def test_bad_fps_raises_value_error(fps: object) -> None:
    with pytest.raises(ValueError, match="fps"):
        encode_mp4(np.zeros((2, 16, 16, 3), np.uint8), fps)  # type: ignore[arg-type]


def test_numpy_integer_fps_is_accepted() -> None:
    data = encode_mp4(np.zeros((2, 16, 16, 3), np.uint8), np.int32(30))  # type: ignore[arg-type]
    assert probe_mp4(data)["fps"] == 30.0


@pytest.mark.parametrize(("data", "match"), [(b"", "empty"), (b"not an mp4 at all" * 10, "not a decodable video")])
def test_bad_mp4_bytes_raise_value_error(data: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decode_mp4(data)
    with pytest.raises(ValueError, match=match):
        probe_mp4(data)


def test_module_does_not_import_torch() -> None:
    code = "import sys, cosmos_triton.media.mp4; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0

"""Frames <-> mp4 bytes, reproducing the original Cosmos `save_video` (docs/MATH.md, Video save).

The original calls::

    imageio.mimsave(path, frames, "mp4", fps=fps, quality=5, macro_block_size=1,
                    ffmpeg_params=["-s", f"{W}x{H}"], output_params=["-f", "mp4"])

which resolves to imageio's legacy FFMPEG plugin and imageio-ffmpeg's `write_frames`. The codec and pixel
format were left to imageio-ffmpeg's defaults there (first working H.264 encoder, yuv420p); we pin them
(`libx264`, `yuv420p`) so a different ffmpeg build (e.g. one where `h264_nvenc` probes first) cannot change
the output. quality=5 becomes `-crf 25` in imageio-ffmpeg only when the codec is literally "libx264".

numpy + imageio only: this module must stay importable without torch (client machines, CPU tests).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import imageio.v2 as iio
import imageio_ffmpeg
import numpy as np

# imageio-ffmpeg starts ffmpeg with preexec_fn=os.setpgrp; a fork that runs Python code in a process with gRPC
# threads (a tritonclient stream, a server test) can hang in the child before exec (imageio-ffmpeg issue #58).
# This variable is that library's own switch to start ffmpeg without it.
os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")

CODEC = "libx264"
PIX_FMT = "yuv420p"
QUALITY = 5  # imageio-ffmpeg maps this to -crf int((1 - 5/10) * 51) = 25 for libx264
CRF = int((1 - QUALITY / 10) * 51)
MACRO_BLOCK_SIZE = 1  # 1 disables imageio's silent rescale to multiples of 16

_PLUGIN = "FFMPEG"  # what the original's format "mp4" resolves to (imageio's .mp4 priority: FFMPEG, pyav)


def _validate_frames(frames: np.ndarray) -> tuple[int, int, int]:
    """Return (T, H, W) or raise ValueError saying exactly what is wrong."""
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must have dtype uint8, got {frames.dtype}")
    if frames.ndim != 4:
        raise ValueError(f"frames must be 4-D [T, H, W, 3], got shape {frames.shape}")
    t, h, w, c = frames.shape
    if c != 3:
        raise ValueError(f"frames must have 3 (RGB) channels in the last axis, got shape {frames.shape}")
    if t < 1:
        raise ValueError(f"frames must contain at least one frame, got shape {frames.shape}")
    if h < 2 or w < 2 or h % 2 or w % 2:
        # libx264 refuses odd sizes with 4:2:0 chroma; imageio-ffmpeg does not check ffmpeg's exit status,
        # so without this check the failure would surface only as an empty or missing file.
        raise ValueError(f"height and width must be even and >= 2 for {CODEC} {PIX_FMT}, got {h}x{w} (HxW)")
    return t, h, w


def _validate_fps(fps: Any) -> int:
    if isinstance(fps, bool) or not isinstance(fps, (int, np.integer)) or fps <= 0:
        raise ValueError(f"fps must be a positive integer, got {fps!r}")
    return int(fps)


def _writer_kwargs(height: int, width: int, fps: int) -> dict[str, Any]:
    # Fresh lists per call: imageio's writer extends `output_params` in place with `ffmpeg_params`,
    # so a shared module-level list would grow with every call.
    return {
        "fps": fps,
        "codec": CODEC,
        "pixelformat": PIX_FMT,
        "quality": QUALITY,
        "macro_block_size": MACRO_BLOCK_SIZE,
        "ffmpeg_params": ["-s", f"{width}x{height}"],
        "output_params": ["-f", "mp4"],
    }


def encode_mp4(frames: np.ndarray, fps: int) -> bytes:
    """Encode uint8 frames [T, H, W, 3] (RGB) to H.264/yuv420p mp4 bytes, exactly like the original save_video.

    The mp4 muxer needs a seekable output (it writes the moov atom last), so we go through a temp file
    rather than a pipe. The result is checked to hold exactly T frames because imageio-ffmpeg ignores
    ffmpeg's exit status.
    """
    frames = np.asarray(frames)
    t, h, w = _validate_frames(frames)
    fps = _validate_fps(fps)
    with tempfile.TemporaryDirectory(prefix="cosmos_mp4_") as tmp:
        path = os.path.join(tmp, "video.mp4")
        iio.mimsave(path, frames, _PLUGIN, **_writer_kwargs(h, w, fps))  # type: ignore[call-overload]
        if not os.path.exists(path) or os.path.getsize(path) == 0:
            raise RuntimeError(f"ffmpeg produced no output for {t} frames of {h}x{w} at {fps} fps")
        n_frames, _ = imageio_ffmpeg.count_frames_and_secs(path)
        if n_frames != t:
            raise RuntimeError(f"ffmpeg wrote {n_frames} frames, expected {t}")
        with open(path, "rb") as f:
            return f.read()


def _write_temp(data: bytes, tmp: str) -> str:
    view = memoryview(data)  # any bytes-like object; TypeError for anything else
    if view.nbytes == 0:
        raise ValueError("mp4 data is empty")
    path = os.path.join(tmp, "video.mp4")
    with open(path, "wb") as f:
        f.write(data)
    return path


def _open_reader(path: str) -> Any:
    try:
        return iio.get_reader(path, _PLUGIN)
    except OSError as err:
        # imageio reports undecodable input as OSError("Could not load meta information ... stderr ...");
        # it also gives up if ffmpeg prints no header within 10 s, so keep ffmpeg's words for diagnosis.
        raise ValueError(f"data is not a decodable video: {_ffmpeg_complaint(str(err))}") from err


def _ffmpeg_complaint(text: str) -> str:
    """The informative lines of an imageio/ffmpeg error, without ffmpeg's version banner."""
    banner = ("ffmpeg version", "built with", "configuration:", "lib", "===")
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith(banner)]
    return " | ".join(lines[-4:])


def decode_mp4(data: bytes) -> tuple[np.ndarray, float]:
    """Decode mp4 bytes to (frames uint8 [T, H, W, 3] RGB, fps)."""
    with tempfile.TemporaryDirectory(prefix="cosmos_mp4_") as tmp:
        reader = _open_reader(_write_temp(data, tmp))
        try:
            fps = float(reader.get_meta_data()["fps"])
            frames = [np.asarray(frame) for frame in reader]
        finally:
            reader.close()
    if not frames:
        raise ValueError("video contains no frames")
    return np.stack(frames).astype(np.uint8, copy=False), fps


def probe_mp4(data: bytes) -> dict[str, Any]:
    """Container facts without decoding pixels: frames, height, width, fps, codec, pix_fmt."""
    with tempfile.TemporaryDirectory(prefix="cosmos_mp4_") as tmp:
        path = _write_temp(data, tmp)
        reader = _open_reader(path)
        try:
            meta = reader.get_meta_data()
        finally:
            reader.close()
        # Stream copy to the null muxer counts packets (one per frame for H.264) without decoding.
        n_frames, _ = imageio_ffmpeg.count_frames_and_secs(path)
    width, height = meta["size"]
    return {
        "frames": int(n_frames),
        "height": int(height),
        "width": int(width),
        "fps": float(meta["fps"]),
        "codec": str(meta["codec"]),
        "pix_fmt": str(meta.get("pix_fmt", "")).split("(")[0],
    }

"""Video2World conditioning input: bytes -> RGB frames -> the 121-frame condition clip.
See docs/MATH.md, Video2World conditioning.

Mirrors the original `read_video_or_image_into_frames_BCTHW` + `create_condition_latent_from_input_frames`
(cosmos1/models/diffusion/inference/inference_utils.py), except that the server receives bytes, not a path:

* images (the original: .png/.jpg/.jpeg, first frame only; we also take .webp) and mp4 videos (imageio FFMPEG);
* RGBA images composited over white with the original's float64 formula, truncated to uint8;
* `x / 128 - 1` (exact in bf16), bicubic antialiased resize computed in float32 and cast to bf16, which is
  what torchvision's `resize` does with the original's bf16 tensor (it casts to float32, interpolates, casts back);
* the LAST `num_input_frames` frames placed first in a 121-frame clip, zero (mid-grey) after them.

The order differs in one harmless way: the original resizes every frame and then keeps the last N; we keep the
last N and then resize. The resize is per frame, so the result is identical and the work is smaller.
"""

from __future__ import annotations

import os
import tempfile
from collections import deque

import imageio.v2 as iio
import imageio.v3 as iio3
import numpy as np
import torch
import torch.nn.functional as F

from cosmos_triton.errors import RequestError
from cosmos_triton.request.limits import LIMITS

INPUT_FIELD = "visual_input"  # the ensemble input tensor (the CLI flag is --input_image_or_video_path)
NUM_INPUT_FRAMES_FIELD = "num_input_frames"
ACCEPTED_NUM_INPUT_FRAMES = (1, 9)  # the original CLI's `choices=[1, 9]`
ACCEPTED_FORMATS = "jpg/jpeg, png or webp image, or mp4 video"
TEMPORAL_COMPRESSION = 8  # CV8x8x8: latent frame k >= 1 covers pixel frames 8k-7 .. 8k

_ISO_IMAGE_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}
_MP4_BOX_TYPES = {b"moov", b"mdat", b"free", b"wide", b"skip"}  # old QuickTime-style files without an ftyp box


def _sniff_format(data: bytes) -> str | None:
    """The accepted format the magic bytes say, or None; content wins over any filename."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:8] == b"ftyp":
        return None if data[8:12] in _ISO_IMAGE_BRANDS else "mp4"
    if data[4:8] in _MP4_BOX_TYPES:
        return "mp4"
    return None


def _describe_unsupported(data: bytes, filename_hint: str | None) -> str:
    """Best-effort name of what was sent, so the error says more than 'unsupported'."""
    known = [
        (data[:4] == b"GIF8", "gif"),
        (data[:2] == b"BM", "bmp"),
        (data[:4] in (b"II*\x00", b"MM\x00*"), "tiff"),
        (data[:4] == b"\x1aE\xdf\xa3", "webm/mkv"),
        (data[:4] == b"RIFF" and data[8:12] == b"AVI ", "avi"),
        (data[4:8] == b"ftyp" and data[8:12] in _ISO_IMAGE_BRANDS, "heic/avif"),
    ]
    for matched, name in known:
        if matched:
            return f"a {name} file"
    ext = os.path.splitext(filename_hint or "")[1].lower()
    return f"content not recognised (filename hint {ext!r})" if ext else "content not recognised"


def _composite_over_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The original's RGBA handling: float64 blend with alpha/255 over a white background, truncated to uint8."""
    a = alpha[..., None] / 255.0
    white = np.ones_like(color) * 255  # uint8, as in the original; promoted to float64 by the product
    return (color * a + white * (1 - a)).astype(np.uint8)


def _to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Any decoded still image -> uint8 [H, W, 3].

    The original only handles 3 and 4 channels; grayscale (2-D) or grey+alpha images crash or misbehave there,
    so here they become RGB by replication, with alpha composited over white exactly like RGBA.
    """
    if image.dtype == np.uint16:  # 16-bit grayscale PNG; the original's pipeline assumes 0..255
        image = np.round(image / 257.0).astype(np.uint8)
    if image.dtype != np.uint8:
        raise RequestError(INPUT_FIELD, f"unsupported pixel type {image.dtype}; send an 8-bit {ACCEPTED_FORMATS}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4):
        raise RequestError(INPUT_FIELD, f"unsupported image layout {image.shape}; expected grey, RGB or RGBA")
    if image.shape[-1] in (2, 4):
        image = _composite_over_white(image[..., :-1], image[..., -1])
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.ascontiguousarray(image)


def _check_frame_size(width: int, height: int) -> None:
    if width * height > LIMITS.max_frame_pixels:
        raise RequestError(INPUT_FIELD, f"is {width}x{height} pixels; accepted: at most {LIMITS.max_frame_pixels} "
                           "pixels per frame (e.g. 4096x4096)")


def _short(exc: BaseException, path: str | None = None) -> str:
    """A decoder's complaint fit for a client: its informative last line, no temp paths, no build banner."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    banner = ("ffmpeg version", "built with", "configuration:", "lib", "===", "Input #", "Stream #", "Metadata")
    lines = [line for line in lines if not line.startswith(banner)]
    text = (lines[-1] if lines else type(exc).__name__)
    if path:
        text = text.replace(path, "input").replace(os.path.dirname(path), "")
    return text[:200]


def _decode_image(data: bytes, fmt: str) -> np.ndarray:
    # First frame only, as the original does (`frames[0]`); pillow's default applies no EXIF rotation, which is
    # also what the original's `imageio.get_reader(f, "jpg")` resolves to with current imageio.
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as header:  # reads the header only: the size before any pixel
            width, height = header.size
    except Exception as e:  # any decoder failure is the client's bad input
        raise RequestError(INPUT_FIELD, f"could not decode the {fmt} image: {_short(e)}") from e
    _check_frame_size(width, height)
    try:
        image = iio3.imread(data, index=0, plugin="pillow")
    except Exception as e:  # any decoder failure is the client's bad input
        raise RequestError(INPUT_FIELD, f"could not decode the {fmt} image: {_short(e)}") from e
    return _to_rgb_uint8(np.asarray(image))[None]


def _decode_video(data: bytes, keep_last: int | None) -> np.ndarray:
    # imageio's FFMPEG plugin needs a real file; a private temp dir keeps concurrent requests apart.
    with tempfile.TemporaryDirectory(prefix="cosmos_v2w_") as tmp:
        path = os.path.join(tmp, "input.mp4")
        with open(path, "wb") as f:
            f.write(data)
        frames: deque[np.ndarray] = deque(maxlen=keep_last)  # bounded: long videos need only their tail
        try:
            reader = iio.get_reader(path, format="FFMPEG")  # rgb24 frames, like the original's format "mp4"
        except Exception as e:  # any decoder failure is the client's bad input
            raise RequestError(INPUT_FIELD, f"could not decode the mp4 video: {_short(e, path)}") from e
        try:
            _check_frame_size(*reader.get_meta_data()["size"])  # from the container header, before decoding
            for count, frame in enumerate(reader, start=1):  # type: ignore[var-annotated,arg-type]
                if count > LIMITS.max_video_frames:
                    raise RequestError(INPUT_FIELD, f"has more than {LIMITS.max_video_frames} frames; accepted: at "
                                       f"most {LIMITS.max_video_frames} (only the last 1 or 9 are used)")
                frames.append(np.asarray(frame))
        except RequestError:
            raise
        except Exception as e:  # any decoder failure is the client's bad input
            raise RequestError(INPUT_FIELD, f"could not decode the mp4 video: {_short(e, path)}") from e
        finally:
            reader.close()
    if not frames:
        raise RequestError(INPUT_FIELD, "the mp4 video contains no decodable frames")
    return np.stack(list(frames))


def decode_visual_input(data: bytes, filename_hint: str | None = None, keep_last: int | None = None) -> np.ndarray:
    """Decode an image or mp4 video sent as bytes into uint8 RGB frames [T, H, W, 3] (T = 1 for images).

    The format is taken from the content; `filename_hint` only improves error messages. `keep_last` bounds memory
    for long videos by keeping only the final frames (the condition uses only the last 1 or 9).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RequestError(INPUT_FIELD, f"expected the file's bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise RequestError(INPUT_FIELD, f"empty input; send a {ACCEPTED_FORMATS}")
    if len(data) > LIMITS.max_visual_input_bytes:
        raise RequestError(INPUT_FIELD, f"is {len(data)} bytes; accepted: at most {LIMITS.max_visual_input_bytes}")
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be >= 1 or None, got {keep_last}")
    fmt = _sniff_format(data)
    if fmt is None:
        raise RequestError(
            INPUT_FIELD,
            f"unsupported format ({_describe_unsupported(data, filename_hint)}); accepted: {ACCEPTED_FORMATS}",
        )
    return _decode_video(data, keep_last) if fmt == "mp4" else _decode_image(data, fmt)


def _check_num_input_frames(num_input_frames: int) -> int:
    if isinstance(num_input_frames, bool) or num_input_frames not in ACCEPTED_NUM_INPUT_FRAMES:
        raise RequestError(
            NUM_INPUT_FRAMES_FIELD, f"got {num_input_frames!r}; accepted: {list(ACCEPTED_NUM_INPUT_FRAMES)}"
        )
    return int(num_input_frames)


def select_input_frames(frames: np.ndarray, num_input_frames: int) -> np.ndarray:
    """The LAST `num_input_frames` frames of [T, H, W, 3].

    Too few frames is an error, as in the original: `check_input_frames` rejects an image when more than one frame
    is required and a video with fewer frames than required (and `create_condition_latent_from_input_frames`
    asserts it again). Nothing is repeated or padded.
    """
    n = _check_num_input_frames(num_input_frames)
    have = int(frames.shape[0])
    if have < n:
        hint = " (an image is 1 frame; use num_input_frames=1 or send a longer video)" if have == 1 else ""
        raise RequestError(INPUT_FIELD, f"has {have} frame(s) but num_input_frames={n} needs at least {n}{hint}")
    return frames[have - n :]


def normalize_frames(frames_uint8: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float32 [T, 3, H, W] holding exactly the original's bf16 `x / 128 - 1` values.

    The original computes float64 `x / 128.0 - 1.0` then casts to bf16, and torchvision's resize casts that to
    float32. Every (k - 128) / 128 for k in 0..255 is exact in bf16 and float32, so float32 here is bit-identical.
    """
    if frames_uint8.dtype != np.uint8 or frames_uint8.ndim != 4 or frames_uint8.shape[-1] != 3:
        raise ValueError(f"expected uint8 [T, H, W, 3], got {frames_uint8.dtype} {frames_uint8.shape}")
    x = torch.from_numpy(np.ascontiguousarray(frames_uint8)).permute(0, 3, 1, 2).to(torch.float32)
    return x / 128.0 - 1.0


def resize_bicubic_antialias(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Stretch float32 [T, C, H, W] to (height, width): bicubic (Keys a = -0.5), antialiased, no crop, no clamp.

    Same call as torchvision's tensor `resize(BICUBIC, antialias=True)`; CPU interpolate has no bf16 kernel for
    this mode, and torchvision would cast bf16 to float32 anyway.
    """
    if tuple(x.shape[-2:]) == (height, width):
        return x  # torchvision returns the input unchanged when the size already matches
    return F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True)


def condition_frames(frames_uint8: np.ndarray, height: int, width: int) -> torch.Tensor:
    """Selected input frames uint8 [N, H, W, 3] -> bf16 [N, 3, height, width] in [-1, 1]: what the encoder sees of
    them. Done where the request is validated, so a large input never travels between stages at full size."""
    out = torch.empty(frames_uint8.shape[0], 3, height, width, dtype=torch.bfloat16)
    for t in range(frames_uint8.shape[0]):  # one frame at a time keeps the float32 peak to a single frame
        out[t] = resize_bicubic_antialias(normalize_frames(frames_uint8[t : t + 1]), height, width)[0]
    return out


def condition_clip(frames: torch.Tensor, num_video_frames: int = 121) -> torch.Tensor:
    """bf16 [N, 3, H, W] -> [1, 3, num_video_frames, H, W]: the N frames first, the rest 0, which is mid-grey in
    [-1, 1] (the original's `new_zeros` padding)."""
    n, _, height, width = frames.shape
    if not 1 <= n <= num_video_frames:
        raise ValueError(f"need 1..{num_video_frames} input frames, got {n}")
    clip = torch.zeros(1, 3, num_video_frames, height, width, dtype=torch.bfloat16, device=frames.device)
    clip[0, :, :n] = frames.to(torch.bfloat16).permute(1, 0, 2, 3)
    return clip


def prepare_condition_video(
    frames_uint8: np.ndarray, height: int, width: int, num_video_frames: int = 121
) -> torch.Tensor:
    """Selected input frames uint8 [N, H, W, 3] -> bf16 [1, 3, num_video_frames, height, width] for the encoder."""
    return condition_clip(condition_frames(frames_uint8, height, width), num_video_frames)


def num_condition_latent_frames(num_input_frames: int) -> int:
    """Latent frames covered by N causal pixel frames: 1 + (N - 1) // 8, i.e. 1 for N = 1 and 2 for N = 9.

    Matches the original's `compute_num_latent_frames` for its accepted values (that function's remainder test
    uses N % 16 where N % 121 is meant, so it would be wrong for e.g. N = 17; that never arises with {1, 9}).
    """
    n = _check_num_input_frames(num_input_frames)
    return 1 + (n - 1) // TEMPORAL_COMPRESSION

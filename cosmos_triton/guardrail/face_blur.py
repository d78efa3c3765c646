"""Face blur post-guardrail (docs/FORMATS.md, Face pixelation; Cosmos
`cosmos1/models/guardrail/face_blur_filter/{face_blur_filter,retinaface_utils,blur_utils}.py`).

RetinaFace-ResNet-50 on every full-resolution frame, one frame per forward pass (the original's batch size 1, so
the convolutions see exactly the original's shapes), then per frame: decode -> score > 0.7 -> top 5000 -> NMS 0.4 ->
top 750 -> skip boxes under 20 px -> pixelate each box in place, in score order (a later box reads pixels an earlier
overlapping box already pixelated, as in the original).

The pixelation reproduces OpenCV's uint8 `cv2.resize` without OpenCV: INTER_LINEAR down to 5x5 (half-pixel centres,
11-bit fixed-point weights and OpenCV's staged vertical rounding) and INTER_NEAREST back up. Checked bit-exact
against opencv-python-headless 4.10 and 5.0 (every ROI size 1x1..99x99, random sizes up to 800 px, strided views),
and the whole filter against the original Cosmos code with real-width random weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cosmos_triton.guardrail.retinaface import RetinaFace, decode, load_retinaface, prior_boxes, py_cpu_nms

CHECKPOINT_NAME = "Resnet50_Final.pth"
CONFIDENCE_THRESHOLD = 0.7
TOP_K = 5_000
NMS_THRESHOLD = 0.4
KEEP_TOP_K = 750
MIN_SIZE = (20, 20)  # (width, height) in px; smaller boxes are left alone
BLOCKS = 5  # pixelation grid
BGR_MEANS = (104.0, 117.0, 123.0)

_COEF_SCALE = 2048  # OpenCV INTER_RESIZE_COEF_SCALE (11 fractional bits)


# ---------------------------------------------------------------- pixelation (cv2.resize semantics, uint8)


def _linear_taps(src: int, dst: int, clamp_weights: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and 11-bit weights of OpenCV's INTER_LINEAR for one axis. OpenCV computes the position in
    float32 from a float64 scale and rounds weights half-to-even. Past an edge the horizontal pass moves all weight
    onto the edge pixel; the vertical pass only clamps the row index and keeps the weights (the results can differ
    by the staged rounding, so both are mirrored)."""
    scale = 1.0 / (dst / src)  # cv::resize: inv_scale = dst/src, scale = 1/inv_scale, both float64
    pos = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
    i0 = np.floor(pos).astype(np.int64)
    frac = pos - i0.astype(np.float32)
    if clamp_weights:
        edge = (i0 < 0) | (i0 >= src - 1)
        frac[edge] = 0
        i0 = np.clip(i0, 0, src - 1)
    w0 = np.rint((np.float32(1) - frac) * np.float32(_COEF_SCALE)).astype(np.int64)
    w1 = np.rint(frac * np.float32(_COEF_SCALE)).astype(np.int64)
    return np.clip(i0, 0, src - 1), np.clip(i0 + 1, 0, src - 1), w0, w1


def resize_linear_u8(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """`cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)` for uint8 [h, w, c], bit-exact. (OpenCV's
    exact-2x-down special case, INTER_AREA, gives the same numbers as this path.)"""
    src = img.astype(np.int64)
    x0, x1, a0, a1 = _linear_taps(img.shape[1], width, clamp_weights=True)
    rows = src[:, x0] * a0[None, :, None] + src[:, x1] * a1[None, :, None]  # horizontal pass: exact integers
    y0, y1, b0, b1 = _linear_taps(img.shape[0], height, clamp_weights=False)
    b0, b1 = b0[:, None, None], b1[:, None, None]
    # VResizeLinear<uchar, int, short>: ((b0*(S0>>4))>>16) + ((b1*(S1>>4))>>16), then +2 >> 2 (scalar and SIMD alike)
    out = (((rows[y0] >> 4) * b0) >> 16) + (((rows[y1] >> 4) * b1) >> 16)
    return np.clip((out + 2) >> 2, 0, 255).astype(np.uint8)


def resize_nearest(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """`cv2.resize(img, (width, height), interpolation=cv2.INTER_NEAREST)`: src = min(floor(dst * (1/(dst_n/src_n))),
    src_n - 1) in float64, as OpenCV's resizeNN computes it."""
    ys = np.minimum(np.floor(np.arange(height) * (1.0 / (height / img.shape[0]))).astype(np.int64), img.shape[0] - 1)
    xs = np.minimum(np.floor(np.arange(width) * (1.0 / (width / img.shape[1]))).astype(np.int64), img.shape[1] - 1)
    return img[ys][:, xs]


def pixelate(roi: np.ndarray, blocks: int = BLOCKS) -> np.ndarray:
    """Cosmos `pixelate_face`: down to blocks x blocks (INTER_LINEAR), back up (INTER_NEAREST)."""
    h, w = roi.shape[:2]
    return resize_nearest(resize_linear_u8(roi, blocks, blocks), w, h)


# ---------------------------------------------------------------- post-processing chain (no network needed)


def filter_detected_boxes(
    boxes: np.ndarray,
    scores: np.ndarray,
    confidence_threshold: float = CONFIDENCE_THRESHOLD,
    nms_threshold: float = NMS_THRESHOLD,
    top_k: int = TOP_K,
    keep_top_k: int = KEEP_TOP_K,
) -> np.ndarray:
    """Cosmos `filter_detected_boxes`: threshold, sort, top-k, NMS, keep-top-k. Returns [K, 4] float32 pixel boxes
    in descending score order."""
    inds = np.where(scores > confidence_threshold)[0]
    boxes, scores = boxes[inds], scores[inds]
    order = scores.argsort()[::-1][:top_k]
    boxes, scores = boxes[order], scores[order]
    dets = np.hstack((boxes, scores[:, np.newaxis])).astype(np.float32, copy=False)
    dets = dets[py_cpu_nms(dets, nms_threshold), :][:keep_top_k, :]
    return dets[:, :-1]


def boxes_from_outputs(
    loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor, height: int, width: int
) -> np.ndarray:
    """One frame's network outputs (loc [P, 4], softmax conf [P, 2], priors [P, 4]) -> kept boxes [K, 4] (x1, y1,
    x2, y2) in pixels, fp32, best first."""
    with torch.no_grad():
        scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=loc.device)
        boxes = decode(loc, priors) * scale
    return filter_detected_boxes(boxes.cpu().numpy(), conf[:, 1].cpu().numpy())


def blur_boxes(frame: np.ndarray, boxes: np.ndarray, min_size: tuple[int, int] = MIN_SIZE) -> np.ndarray:
    """Pixelate each box of `frame` ([H, W, 3] uint8) in place, in the given order; returns `frame`.

    The slicing is the original's, quirks included: coordinates are truncated with int(), the ROI is
    frame[max(y1,0):min(y2,H), max(x1,0):min(x2,W)], so a box lying wholly above/left of the frame (negative y2/x2)
    selects up to -y2/-x2 from the far edge, as Python slicing does. An empty ROI (where cv2.resize would raise) is
    skipped."""
    max_h, max_w = frame.shape[:2]
    for box in boxes:
        x1, y1, x2, y2 = map(int, box)
        if x2 - x1 < min_size[0] or y2 - y1 < min_size[1]:
            continue
        region = (slice(max(y1, 0), min(y2, max_h)), slice(max(x1, 0), min(x2, max_w)))
        roi = frame[region]
        if roi.size == 0:
            continue
        frame[region] = pixelate(roi)
    return frame


def blur_frame(
    frame: np.ndarray, loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor, min_size: tuple[int, int] = MIN_SIZE
) -> np.ndarray:
    """The whole post-processing chain for one frame, in place: decode -> filter -> NMS -> boxes -> pixelate."""
    boxes = boxes_from_outputs(loc, conf, priors, frame.shape[0], frame.shape[1])
    return blur_boxes(frame, boxes, min_size)


# ---------------------------------------------------------------- the guardrail


class RetinaFaceFilter:
    """Pixelates faces in uint8 [T, H, W, 3] RGB video. `apply` returns a new array; the input is left untouched
    (the original also wrote into its input; the returned frames are the same)."""

    def __init__(self, face_blur_dir: Path, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.net: RetinaFace = load_retinaface(Path(face_blur_dir) / CHECKPOINT_NAME, self.device)
        self._priors: dict[tuple[int, int], torch.Tensor] = {}
        self._means = torch.tensor(BGR_MEANS, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    def priors(self, height: int, width: int) -> torch.Tensor:
        key = (height, width)
        if key not in self._priors:  # once per resolution, like the original's once per video
            self._priors[key] = prior_boxes(height, width).to(self.device)
        return self._priors[key]

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 RGB [N, H, W, 3] -> fp32 BGR NCHW minus the BGR means; no scaling, no resize."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device, dtype=torch.float32)
        return x.permute(0, 3, 1, 2)[:, [2, 1, 0], :, :] - self._means

    @torch.no_grad()
    def detect(self, frame: np.ndarray) -> np.ndarray:
        """Kept face boxes [K, 4] (pixels, best first) of one [H, W, 3] frame, before the min-size check."""
        loc, conf, _ = self.net(self.preprocess(frame[None]))
        return boxes_from_outputs(loc[0], conf[0], self.priors(*frame.shape[:2]), *frame.shape[:2])

    def apply(self, frames: np.ndarray) -> np.ndarray:
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 [T, H, W, 3] frames, got {frames.dtype} {frames.shape}")
        out = np.array(frames, copy=True)
        for frame in out:  # batch 1: the original's DataLoader(batch_size=1)
            blur_boxes(frame, self.detect(frame))
        return out

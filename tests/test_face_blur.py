"""Face blur (docs/FORMATS.md, RetinaFace and Face pixelation): the post-processing chain on constructed network
outputs, the cv2-equivalent pixelation, priors, NMS, the network's key layout and the checkpoint loader."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cosmos_triton.guardrail.face_blur import (
    RetinaFaceFilter,
    blur_boxes,
    blur_frame,
    boxes_from_outputs,
    pixelate,
    resize_linear_u8,
    resize_nearest,
)
from cosmos_triton.guardrail.retinaface import (
    RetinaFace,
    RetinaFaceDims,
    decode,
    load_retinaface,
    prior_boxes,
    py_cpu_nms,
)
from export.small_face_blur import SMALL_DIMS, write_small_face_blur

H, W = 64, 96


def _frame(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _pattern(h: int, w: int) -> np.ndarray:
    i, j, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    return ((i * 37 + j * 11 + c * 5 + (i * j) % 7 * 13) % 256).astype(np.uint8)


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("face_blur")
    write_small_face_blur(out)
    return out


# ---------------------------------------------------------------- priors, decode, NMS


def test_prior_boxes_equal_the_original_loop() -> None:
    h, w = 50, 70  # not multiples of any step: ceil() matters
    anchors = []
    for step, sizes in zip((8, 16, 32), ((16, 32), (64, 128), (256, 512)), strict=True):
        for i, j in itertools.product(range(math.ceil(h / step)), range(math.ceil(w / step))):
            for m in sizes:
                anchors += [(j + 0.5) * step / w, (i + 0.5) * step / h, m / w, m / h]
    expected = torch.Tensor(anchors).view(-1, 4)
    got = prior_boxes(h, w)
    assert got.dtype == torch.float32 and got.shape == (2 * (7 * 9 + 4 * 5 + 2 * 3), 4)
    assert torch.equal(got, expected)


def test_decode_formula() -> None:
    prior = torch.tensor([[0.5, 0.25, 0.2, 0.4]])
    loc = torch.tensor([[1.0, -2.0, 0.5, -1.0]])
    cx, cy = 0.5 + 1.0 * 0.1 * 0.2, 0.25 - 2.0 * 0.1 * 0.4
    bw, bh = 0.2 * math.exp(0.5 * 0.2), 0.4 * math.exp(-1.0 * 0.2)
    expected = torch.tensor([[cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]])
    assert torch.allclose(decode(loc, prior), expected, atol=1e-7)
    assert torch.equal(decode(loc[None], prior)[0], decode(loc, prior))  # batched == per frame


def test_nms_uses_inclusive_areas() -> None:
    # IoU with the +1 convention: 60/140 = 0.43 > 0.4 (suppressed); without it 45/117 = 0.38 (would be kept)
    dets = np.array([[0, 0, 9, 9, 0.9], [0, 4, 9, 13, 0.8], [20, 20, 29, 29, 0.7]], dtype=np.float32)
    assert py_cpu_nms(dets, 0.4) == [0, 2]
    assert py_cpu_nms(dets[[1, 0, 2]], 0.4) == [1, 2]  # order follows scores, indices refer to the input


# ---------------------------------------------------------------- pixelation (cv2.resize semantics)


def test_linear_2x_down_is_rounded_block_mean() -> None:
    roi = _pattern(10, 10)
    blocks = roi.reshape(5, 2, 5, 2, 3).astype(np.int64).sum(axis=(1, 3))
    assert np.array_equal(resize_linear_u8(roi, 5, 5), ((blocks + 2) // 4).astype(np.uint8))
    # ...and nearest back up repeats each cell 2x2
    assert np.array_equal(pixelate(roi), np.repeat(np.repeat((blocks + 2) // 4, 2, 0), 2, 1).astype(np.uint8))


def test_linear_4x_down_averages_the_two_middle_pixels() -> None:
    roi = _pattern(5, 20)  # rows map 1:1 (weight 2048/0); columns sample at 4k+1.5: pixels 4k+1, 4k+2, 1024 each
    mid = roi[:, 1::4].astype(np.int64) + roi[:, 2::4]
    assert np.array_equal(resize_linear_u8(roi, 5, 5), ((mid + 1) // 2).astype(np.uint8))


@pytest.mark.parametrize(
    ("h", "w", "expected"),
    [
        # recorded from cv2.resize(_pattern(h, w), (5, 5), interpolation=cv2.INTER_LINEAR), opencv-python-headless
        # 4.10.0.84 (5.0.0.93 gives the same); uneven weights and the staged fixed-point rounding
        (7, 9, [[[13, 18, 23], [37, 42, 47], [62, 67, 72], [86, 91, 96], [92, 97, 102]],
                [[72, 77, 82], [129, 134, 139], [132, 137, 142], [189, 194, 199], [155, 160, 165]],
                [[131, 136, 141], [203, 208, 213], [220, 225, 230], [219, 224, 229], [218, 223, 228]],
                [[149, 154, 159], [214, 219, 112], [151, 156, 161], [134, 16, 21], [86, 91, 96]],
                [[147, 152, 157], [91, 96, 60], [49, 54, 59], [41, 46, 51], [87, 92, 97]]]),
        # 3 rows -> 5: upsampling vertically, row weights kept past the edge
        (3, 22, [[[18, 23, 28], [67, 72, 77], [115, 120, 125], [164, 169, 174], [212, 217, 222]],
                 [[42, 47, 52], [110, 115, 120], [148, 153, 158], [183, 188, 193], [152, 157, 162]],
                 [[78, 83, 88], [174, 179, 184], [198, 203, 208], [213, 218, 223], [62, 67, 72]],
                 [[113, 118, 123], [189, 194, 199], [143, 148, 153], [104, 109, 114], [71, 76, 81]],
                 [[137, 142, 147], [199, 204, 209], [107, 112, 117], [31, 36, 41], [77, 82, 87]]]),
    ],
)  # fmt: skip
def test_linear_matches_recorded_cv2(h: int, w: int, expected: list) -> None:
    assert resize_linear_u8(_pattern(h, w), 5, 5).tolist() == expected


def test_nearest_up() -> None:
    small = np.arange(25, dtype=np.uint8).reshape(5, 5, 1)
    up = resize_nearest(small, 12, 7)  # x: floor(x * 5/12), y: floor(y * 5/7)
    assert up[:, :, 0].tolist() == [
        [5 * r + c for c in (0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4)] for r in (0, 0, 1, 2, 2, 3, 4)
    ]


# ---------------------------------------------------------------- the chain on constructed network outputs


def _encode(box: tuple[float, float, float, float], prior: torch.Tensor) -> list[float]:
    """Inverse of decode: the loc that gives `box` (pixels) for `prior` on an H x W image."""
    x1, y1, x2, y2 = box
    cx, cy, bw, bh = (x1 + x2) / 2 / W, (y1 + y2) / 2 / H, (x2 - x1) / W, (y2 - y1) / H
    pcx, pcy, pw, ph = prior.double().tolist()
    return [(cx - pcx) / (0.1 * pw), (cy - pcy) / (0.1 * ph), math.log(bw / pw) / 0.2, math.log(bh / ph) / 0.2]


def _outputs(dets: list[tuple[tuple[float, float, float, float], float]]) -> tuple[torch.Tensor, torch.Tensor]:
    priors = prior_boxes(H, W)
    loc = torch.zeros(len(priors), 4)
    conf = torch.tensor([[1.0, 0.0]]).repeat(len(priors), 1)  # everything else: background
    for idx, (box, score) in enumerate(dets):
        loc[idx * 7] = torch.tensor(_encode(box, priors[idx * 7]))
        conf[idx * 7] = torch.tensor([1 - score, score])
    return loc, conf


KEPT_A = (10.5, 8.5, 40.5, 38.5)  # -> frame[8:38, 10:40]
OVERLAPS_A = (12.5, 10.5, 42.5, 40.5)  # IoU with A ~0.77, lower score: NMS drops it
LOW_SCORE = (50.5, 2.5, 90.5, 30.5)
TOO_SMALL = (60.5, 40.5, 75.5, 55.5)  # 15 x 15 px: survives NMS, skipped by the size check
KEPT_EDGE = (70.5, 36.5, 110.5, 70.5)  # leaves the frame: ROI clipped to frame[36:64, 70:96]
DETS = [(KEPT_A, 0.95), (OVERLAPS_A, 0.92), (LOW_SCORE, 0.69), (TOO_SMALL, 0.9), (KEPT_EDGE, 0.8)]


def test_boxes_from_outputs_threshold_and_nms() -> None:
    loc, conf = _outputs(DETS)
    boxes = boxes_from_outputs(loc, conf, prior_boxes(H, W), H, W)
    assert boxes.dtype == np.float32
    assert np.allclose(boxes, [KEPT_A, TOO_SMALL, KEPT_EDGE], atol=1e-3)  # score order; B and C gone


def test_blur_frame_changes_only_kept_boxes() -> None:
    frame = _frame()
    loc, conf = _outputs(DETS)
    out = blur_frame(frame.copy(), loc, conf, prior_boxes(H, W))

    expected = frame.copy()
    for region in ((slice(8, 38), slice(10, 40)), (slice(36, 64), slice(70, 96))):
        expected[region] = pixelate(expected[region])
    assert np.array_equal(out, expected)

    inside = np.zeros((H, W), dtype=bool)
    inside[8:38, 10:40] = inside[36:64, 70:96] = True
    assert np.array_equal(out[~inside], frame[~inside])  # nothing outside kept boxes moves
    assert (out[8:38, 10:40] != frame[8:38, 10:40]).mean() > 0.9
    assert (out[36:64, 70:96] != frame[36:64, 70:96]).mean() > 0.9
    # the pixelated ROI has 5 x 5 flat cells
    assert len(np.unique(out[8:38, 10:40].reshape(-1, 3), axis=0)) <= 25


def test_blur_boxes_skips_small_and_empty() -> None:
    frame = _frame()
    boxes = np.array([[0, 0, 19.9, 40], [0, 0, 40, 19.9], [200, 10, 240, 50]], dtype=np.float32)  # < 20 px; outside
    assert np.array_equal(blur_boxes(frame.copy(), boxes), frame)


# ---------------------------------------------------------------- network and checkpoint


def test_real_width_network_key_layout() -> None:
    sd = RetinaFace().state_dict()
    assert len(sd) == 456 and sum(not k.endswith("num_batches_tracked") for k in sd) == 383
    shapes = {
        "body.conv1.weight": (64, 3, 7, 7),
        "body.layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "body.layer2.0.conv2.weight": (128, 128, 3, 3),
        "body.layer3.5.conv3.weight": (1024, 256, 1, 1),
        "body.layer4.0.downsample.1.running_var": (2048,),
        "body.layer4.2.bn3.weight": (2048,),
        "fpn.output1.0.weight": (256, 512, 1, 1),
        "fpn.output3.0.weight": (256, 2048, 1, 1),
        "fpn.merge2.0.weight": (256, 256, 3, 3),
        "ssh1.conv3X3.0.weight": (128, 256, 3, 3),
        "ssh2.conv5X5_1.0.weight": (64, 256, 3, 3),
        "ssh3.conv7x7_3.1.weight": (64,),
        "ClassHead.0.conv1x1.weight": (4, 256, 1, 1),
        "ClassHead.2.conv1x1.bias": (4,),
        "BboxHead.1.conv1x1.weight": (8, 256, 1, 1),
        "LandmarkHead.2.conv1x1.weight": (20, 256, 1, 1),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert "body.fc.weight" not in sd and "body.layer1.1.downsample.0.weight" not in sd
    assert RetinaFaceDims.from_state_dict(sd) == RetinaFaceDims()


def test_small_checkpoint_loads_and_matches_priors(small_dir: Path) -> None:
    raw = torch.load(small_dir / "Resnet50_Final.pth", weights_only=True)
    assert all(k.startswith("module.") for k in raw) and len(raw) == 456  # the real file's layout
    net = load_retinaface(small_dir / "Resnet50_Final.pth")
    assert net.dims == SMALL_DIMS
    with torch.no_grad():
        loc, conf, ldm = net(torch.randn(1, 3, 33, 45))
    n = len(prior_boxes(33, 45))
    assert loc.shape == (1, n, 4) and conf.shape == (1, n, 2) and ldm.shape == (1, n, 10)
    assert conf[..., 1].max() < 1e-3  # the test detector sees no faces


def test_checkpoint_key_errors_are_loud(small_dir: Path, tmp_path: Path) -> None:
    raw = torch.load(small_dir / "Resnet50_Final.pth", weights_only=True)
    renamed = {("module.ssh2.conv7X7_3.0.weight" if k == "module.ssh2.conv7x7_3.0.weight" else k): v
               for k, v in raw.items()}  # fmt: skip
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(KeyError, match=r"ssh2\.conv7x7_3\.0\.weight.*ssh2\.conv7X7_3\.0\.weight"):
        load_retinaface(tmp_path / "renamed.pth")
    torch.save({k: v for k, v in raw.items() if k != "module.body.conv1.weight"}, tmp_path / "missing.pth")
    with pytest.raises(KeyError, match=r"body\.conv1\.weight"):
        load_retinaface(tmp_path / "missing.pth")
    torch.save({"state_dict": raw}, tmp_path / "wrapped.pth")  # the other layout the original accepts
    assert load_retinaface(tmp_path / "wrapped.pth").dims == SMALL_DIMS


def test_filter_apply(small_dir: Path) -> None:
    flt = RetinaFaceFilter(small_dir)
    frames = np.stack([_frame(48, 80, seed=s) for s in range(3)])
    original = frames.copy()
    out = flt.apply(frames)
    assert out.dtype == np.uint8 and out.shape == frames.shape
    assert np.array_equal(out, frames) and np.array_equal(frames, original)  # no faces; input untouched

    for head in flt.net.ClassHead:  # now every anchor is a confident face: the full path pixelates
        head.conv1x1.bias.data = torch.tensor([-20.0, 20.0, -20.0, 20.0])
    out = flt.apply(frames)
    assert np.array_equal(frames, original) and not np.array_equal(out, frames)
    for frame, got in zip(frames, out, strict=True):
        expected = blur_boxes(frame.copy(), flt.detect(frame))
        assert np.array_equal(got, expected)

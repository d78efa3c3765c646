"""RetinaFace with a ResNet-50 body (biubug6/NVlabs Pytorch_Retinaface, `cfg_re50`), without torchvision.

Module tree and parameter names are those of the original (docs/FORMATS.md, RetinaFace), so `Resnet50_Final.pth`
loads strictly once its `module.` prefix is stripped. Widths, block counts and anchors are read from the checkpoint's
shapes: the real file gives the real network, a narrow test checkpoint with the same key names gives a narrow one.

Also here: `prior_boxes` (PriorBox), `decode` (decode_batch) and `py_cpu_nms`, written to do the same fp32/fp64
arithmetic in the same order as the original so results match bit for bit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# cfg_re50 (data/config.py); only the inference fields
MIN_SIZES: tuple[tuple[int, int], ...] = ((16, 32), (64, 128), (256, 512))
STEPS: tuple[int, ...] = (8, 16, 32)
VARIANCE: tuple[float, float] = (0.1, 0.2)
CLIP = False
EXPANSION = 4  # torchvision Bottleneck


def _four(values: list[int]) -> tuple[int, int, int, int]:
    """Four values (one per ResNet stage) as the 4-tuple RetinaFaceDims declares."""
    first, second, third, fourth = values
    return first, second, third, fourth


@dataclass(frozen=True)
class RetinaFaceDims:
    """The shape parameters of the network; the defaults are the real `Resnet50_Final.pth`."""

    stem: int = 64  # body.conv1 output channels
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)  # bottleneck widths of layer1..4 (output = 4x)
    blocks: tuple[int, int, int, int] = (3, 4, 6, 3)
    out_channels: int = 256  # cfg out_channel: FPN / SSH / head input
    anchors: int = 2  # per location; the priors below assume 2 (len(min_sizes[k]))

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor]) -> RetinaFaceDims:
        def shape(key: str) -> torch.Size:
            if key not in sd:
                raise KeyError(f"RetinaFace checkpoint lacks {key!r} (needed to infer the network's widths)")
            return sd[key].shape

        blocks = []
        for i in range(1, 5):
            pat = re.compile(rf"body\.layer{i}\.(\d+)\.")
            found = {int(m.group(1)) for k in sd if (m := pat.match(k))}
            if not found:
                raise KeyError(f"RetinaFace checkpoint has no body.layer{i}.* keys")
            blocks.append(max(found) + 1)  # a gap in the indices shows up later as missing keys
        return cls(
            stem=shape("body.conv1.weight")[0],
            widths=_four([shape(f"body.layer{i}.0.conv1.weight")[0] for i in range(1, 5)]),
            blocks=_four(blocks),
            out_channels=shape("fpn.output1.0.weight")[0],
            anchors=shape("ClassHead.0.conv1x1.weight")[0] // 2,
        )


# ---------------------------------------------------------------- backbone: torchvision ResNet-50 names, no torchvision


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (v1.5: stride on the 3x3 conv)."""

    def __init__(self, inplanes: int, width: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * EXPANSION, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * EXPANSION)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetBody(nn.Module):
    """`IntermediateLayerGetter(resnet50(), {'layer2': 1, 'layer3': 2, 'layer4': 3})`: the ResNet up to layer4 (no
    avgpool/fc), returning the layer2, layer3 and layer4 outputs (strides 8, 16, 32) in that order."""

    def __init__(self, dims: RetinaFaceDims) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, dims.stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(dims.stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = dims.stem
        for i, (width, n, stride) in enumerate(zip(dims.widths, dims.blocks, (1, 2, 2, 2), strict=True), start=1):
            layer = []
            for b in range(n):
                s = stride if b == 0 else 1
                down = None
                if b == 0 and (s != 1 or inplanes != width * EXPANSION):
                    down = nn.Sequential(
                        nn.Conv2d(inplanes, width * EXPANSION, 1, stride=s, bias=False),
                        nn.BatchNorm2d(width * EXPANSION),
                    )
                layer.append(Bottleneck(inplanes, width, s, down))
                inplanes = width * EXPANSION
            setattr(self, f"layer{i}", nn.Sequential(*layer))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.get_submodule("layer1")(x)  # built by setattr: named for the checkpoint's keys
        c3 = self.get_submodule("layer2")(c2)
        c4 = self.get_submodule("layer3")(c3)
        c5 = self.get_submodule("layer4")(c4)
        return [c3, c4, c5]


# ---------------------------------------------------------------- FPN / SSH / heads (models/net.py, retinaface.py)


def _conv_bn(inp: int, oup: int, leaky: float) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 3, 1, 1, bias=False), nn.BatchNorm2d(oup), nn.LeakyReLU(leaky, True))


def _conv_bn_no_relu(inp: int, oup: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 3, 1, 1, bias=False), nn.BatchNorm2d(oup))


def _conv_bn1x1(inp: int, oup: int, leaky: float) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup), nn.LeakyReLU(leaky, True))


def _leaky(out_channels: int) -> float:
    return 0.1 if out_channels <= 64 else 0.0  # the original's rule: ReLU at 256, leaky for narrow (mobilenet) widths


class FPN(nn.Module):
    def __init__(self, in_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        leaky = _leaky(out_channels)
        self.output1 = _conv_bn1x1(in_channels[0], out_channels, leaky)
        self.output2 = _conv_bn1x1(in_channels[1], out_channels, leaky)
        self.output3 = _conv_bn1x1(in_channels[2], out_channels, leaky)
        self.merge1 = _conv_bn(out_channels, out_channels, leaky)
        self.merge2 = _conv_bn(out_channels, out_channels, leaky)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        o1, o2, o3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=[o2.size(2), o2.size(3)], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=[o1.size(2), o1.size(3)], mode="nearest"))
        return [o1, o2, o3]


class SSH(nn.Module):
    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        assert out_channel % 4 == 0, out_channel
        leaky = _leaky(out_channel)
        self.conv3X3 = _conv_bn_no_relu(in_channel, out_channel // 2)
        self.conv5X5_1 = _conv_bn(in_channel, out_channel // 4, leaky)
        self.conv5X5_2 = _conv_bn_no_relu(out_channel // 4, out_channel // 4)
        self.conv7X7_2 = _conv_bn(out_channel // 4, out_channel // 4, leaky)
        self.conv7x7_3 = _conv_bn_no_relu(out_channel // 4, out_channel // 4)  # lower-case x, as in the original

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c5_1 = self.conv5X5_1(x)
        out = torch.cat([self.conv3X3(x), self.conv5X5_2(c5_1), self.conv7x7_3(self.conv7X7_2(c5_1))], dim=1)
        return F.relu(out)


class _Head(nn.Module):
    """ClassHead / BboxHead / LandmarkHead: a 1x1 conv, NHWC, [N, H*W*anchors, per_anchor]."""

    def __init__(self, inchannels: int, anchors: int, per_anchor: int) -> None:
        super().__init__()
        self.per_anchor = per_anchor
        self.conv1x1 = nn.Conv2d(inchannels, anchors * per_anchor, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1).contiguous()
        return out.view(out.shape[0], -1, self.per_anchor)


class RetinaFace(nn.Module):
    """`RetinaFace(cfg_re50, phase="test")`: returns (loc [N,P,4], softmax scores [N,P,2], landmarks [N,P,10])."""

    def __init__(self, dims: RetinaFaceDims = RetinaFaceDims()) -> None:
        super().__init__()
        self.dims = dims
        self.body = ResNetBody(dims)
        c = dims.out_channels
        self.fpn = FPN([w * EXPANSION for w in dims.widths[1:]], c)
        self.ssh1, self.ssh2, self.ssh3 = SSH(c, c), SSH(c, c), SSH(c, c)
        self.ClassHead = nn.ModuleList(_Head(c, dims.anchors, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(_Head(c, dims.anchors, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(_Head(c, dims.anchors, 10) for _ in range(3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fpn = self.fpn(self.body(x))
        feats = [self.ssh1(fpn[0]), self.ssh2(fpn[1]), self.ssh3(fpn[2])]
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats, strict=True)], dim=1)
        cls = torch.cat([h(f) for h, f in zip(self.ClassHead, feats, strict=True)], dim=1)
        ldm = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats, strict=True)], dim=1)
        return loc, F.softmax(cls, dim=-1), ldm


# ---------------------------------------------------------------- loading


def strip_module_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`Resnet50_Final.pth` was saved from DataParallel: every key starts with `module.`."""
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in sd.items()}


def load_state_dict_strict(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> None:
    """Strict load with a readable error. Only `num_batches_tracked` may be absent: it is unused in eval mode and
    checkpoints from torch < 0.4.1 lack it."""
    expected = model.state_dict()
    missing = sorted(k for k in expected.keys() - sd.keys() if not k.endswith("num_batches_tracked"))
    unexpected = sorted(sd.keys() - expected.keys())
    if missing or unexpected:
        raise KeyError(f"RetinaFace checkpoint does not match the network: missing {missing}, unexpected {unexpected}")
    bad = [
        f"{k}: {tuple(v.shape)} != {tuple(expected[k].shape)}" for k, v in sd.items() if v.shape != expected[k].shape
    ]
    if bad:
        raise ValueError(f"RetinaFace checkpoint shape mismatch: {bad}")
    model.load_state_dict(sd, strict=False)  # strictness checked above, with the num_batches_tracked allowance


def load_retinaface(path: Path | str, device: str | torch.device = "cpu") -> RetinaFace:
    """Build the network from a checkpoint (plain or `{"state_dict": ...}`, with or without `module.`), fp32, eval."""
    raw = torch.load(path, map_location="cpu", weights_only=True)
    sd = strip_module_prefix(raw.get("state_dict", raw))
    model = RetinaFace(RetinaFaceDims.from_state_dict(sd))
    load_state_dict_strict(model, sd)
    return model.to(device=device, dtype=torch.float32).eval()


# ---------------------------------------------------------------- priors, decode, NMS


def prior_boxes(height: int, width: int) -> torch.Tensor:
    """PriorBox(cfg_re50, (H, W)).forward(): [P, 4] (cx, cy, w, h) in [0, 1] units, fp32. Order: level, row, column,
    min_size -- the order in which the heads flatten their outputs. Computed in float64 like the original's Python
    floats (same operation order), then rounded once to fp32."""
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES, strict=True):
        rows, cols = -(-height // step), -(-width // step)  # ceil(H/step) without float division
        cy = (np.arange(rows, dtype=np.float64) + 0.5) * step / height
        cx = (np.arange(cols, dtype=np.float64) + 0.5) * step / width
        grid = np.empty((rows, cols, len(sizes), 4), dtype=np.float64)
        grid[..., 0] = cx[None, :, None]
        grid[..., 1] = cy[:, None, None]
        grid[..., 2] = np.array([m / width for m in sizes])[None, None, :]
        grid[..., 3] = np.array([m / height for m in sizes])[None, None, :]
        out.append(grid.reshape(-1, 4))
    priors = torch.from_numpy(np.concatenate(out).astype(np.float32))
    return priors.clamp_(0, 1) if CLIP else priors


def decode(loc: torch.Tensor, priors: torch.Tensor, variances: Sequence[float] = VARIANCE) -> torch.Tensor:
    """Cosmos `decode_batch`: loc [..., P, 4] offsets -> (x1, y1, x2, y2) in [0, 1] units, same op order."""
    priors = priors.expand_as(loc)
    boxes = torch.cat(
        (
            priors[..., :2] + loc[..., :2] * variances[0] * priors[..., 2:],
            priors[..., 2:] * torch.exp(loc[..., 2:] * variances[1]),
        ),
        dim=-1,
    )
    boxes[..., :2] -= boxes[..., 2:] / 2
    boxes[..., 2:] += boxes[..., :2]
    return boxes


def py_cpu_nms(dets: np.ndarray, thresh: float) -> list[int]:
    """Fast R-CNN NMS on [K, 5] (x1, y1, x2, y2, score): pixel-inclusive areas (+1), suppress IoU > thresh."""
    x1, y1, x2, y2, scores = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return keep

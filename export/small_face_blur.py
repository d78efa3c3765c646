"""Write a narrow RetinaFace-ResNet-50 as `face_blur_filter/Resnet50_Final.pth` (docs/FORMATS.md, RetinaFace).

Same key names and layout as the real file: a flat dict, every key prefixed with `module.` (it was saved from
DataParallel), `num_batches_tracked` included, fp32. Only the widths are small: ResNet stem/base width 8
(layers 8/16/32/64, outputs 32/64/128/256), FPN/SSH width 16, 2 anchors, block counts [3, 4, 6, 3] as in ResNet-50.
The loader infers all of this from the shapes.

Weights are random (seeded) with BN statistics set so activations stay O(1), and the classification heads are
biased hard towards background (face probability ~1e-7), so the filter runs the whole path -- network, decode,
threshold, NMS -- on any frame and finds no faces.

Usage: python -m export.small_face_blur OUT_DIR [--seed N]
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from pathlib import Path

import torch

from cosmos_triton.guardrail.face_blur import CHECKPOINT_NAME
from cosmos_triton.guardrail.retinaface import RetinaFace, RetinaFaceDims

SMALL_DIMS = RetinaFaceDims(stem=8, widths=(8, 16, 32, 64), blocks=(3, 4, 6, 3), out_channels=16, anchors=2)
BACKGROUND_LOGIT_GAP = 16.0  # logit(background) - logit(face) per anchor: softmax face score ~1e-7, far below 0.7


def small_state_dict(seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    """The narrow network's state dict without the `module.` prefix, deterministic in `seed`."""
    gen = torch.Generator().manual_seed(seed)
    model = RetinaFace(SMALL_DIMS)
    sd = model.state_dict()
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, ref in sd.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros((), dtype=torch.int64)
            continue
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "weight" and ref.dim() == 4:  # conv: He-normal, so each conv-BN-ReLU keeps the scale
            fan_in = ref.shape[1] * ref.shape[2] * ref.shape[3]
            t = torch.randn(ref.shape, generator=gen) * (2.0 / fan_in) ** 0.5
        elif leaf == "weight":  # BN gamma; the last BN of a residual branch small, so the trunk does not blow up
            t = torch.full(ref.shape, 0.2 if key.endswith("bn3.weight") else 1.0)
        elif leaf == "running_var":  # the stem sees raw mean-subtracted pixels (std ~60): normalise them like real BN
            t = (0.5 + torch.rand(ref.shape, generator=gen)) * (3600.0 if key == "body.bn1.running_var" else 1.0)
        elif leaf in ("bias", "running_mean"):
            t = 0.1 * torch.randn(ref.shape, generator=gen)
        else:
            raise AssertionError(f"unhandled parameter {key}")
        out[key] = t.to(torch.float32).contiguous()
    for i in range(3):
        for head in ("BboxHead", "LandmarkHead"):  # offsets of O(1) instead of O(10): boxes near their priors
            out[f"{head}.{i}.conv1x1.weight"] *= 0.1
        # ClassHead channels are (anchor0: bg, face, anchor1: bg, face)
        w, b = f"ClassHead.{i}.conv1x1.weight", f"ClassHead.{i}.conv1x1.bias"
        out[w] = out[w] * 0.01
        out[b] = torch.tensor([BACKGROUND_LOGIT_GAP / 2, -BACKGROUND_LOGIT_GAP / 2] * SMALL_DIMS.anchors)
    return out


def write_small_face_blur(face_blur_dir: Path, seed: int = 0) -> Path:
    """Write `<face_blur_dir>/Resnet50_Final.pth` (keys `module.*`, like the DataParallel original); returns it."""
    face_blur_dir = Path(face_blur_dir)
    face_blur_dir.mkdir(parents=True, exist_ok=True)
    path = face_blur_dir / CHECKPOINT_NAME
    sd = OrderedDict(("module." + k, v) for k, v in small_state_dict(seed).items())
    torch.save(sd, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_small_face_blur(args.out_dir, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

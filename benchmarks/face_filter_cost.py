"""What the face filter of the video guardrail costs per frame, split into the network and the post-processing, and
how that depends on what the network detects.

    python benchmarks/face_filter_cost.py [--guardrail_dir DIR] [--device cuda] [--repeat 2] [--out DIR]

Without --guardrail_dir it builds RetinaFace-ResNet-50 with random weights the way the full-size harness does
(`benchmarks/fullsize/checkpoints.py`, seed 0). Two frames at 704x1280: uniform noise (what a random-weight DiT
decodes to) and a smooth gradient. The post-processing (threshold, NMS, pixelation of every kept box, as the
original does it) runs on the CPU per frame; its cost grows with the number of boxes above the 0.7 threshold,
which a random network finds by the thousand in noise and a trained one only where there are faces.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cosmos_triton.guardrail import face_blur
from cosmos_triton.guardrail.common import FACE_BLUR_DIR
from cosmos_triton.guardrail.retinaface import RetinaFace, RetinaFaceDims

HEIGHT, WIDTH = 704, 1280


def frames() -> dict[str, np.ndarray]:
    noise = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    smooth = np.stack([x * 255 // WIDTH, y * 255 // HEIGHT, np.full_like(x, 128)], -1).astype(np.uint8)
    return {"noise": noise, "smooth": smooth}


def _clock(sync: bool) -> float:
    if sync:
        torch.cuda.synchronize()
    return time.perf_counter()


def measure(face_dir: Path, device: str, repeat: int) -> dict[str, dict[str, float]]:
    filt = face_blur.RetinaFaceFilter(face_dir, device)
    sync = device.startswith("cuda")
    priors = filt.priors(HEIGHT, WIDTH)
    rows = {}
    for name, frame in frames().items():
        best: dict[str, float] = {}
        for _ in range(repeat):
            t0 = _clock(sync)
            with torch.no_grad():
                loc, conf, _ = filt.net(filt.preprocess(frame[None]))
            t1 = _clock(sync)
            boxes = face_blur.boxes_from_outputs(loc[0], conf[0], priors, HEIGHT, WIDTH)
            t2 = _clock(False)
            face_blur.blur_boxes(frame.copy(), boxes)
            t3 = _clock(False)
            times = {"net_s": t1 - t0, "threshold_nms_s": t2 - t1, "pixelate_s": t3 - t2}
            best = {k: min(v, best.get(k, v)) for k, v in times.items()}
        above = int((conf[0, :, 1] > face_blur.CONFIDENCE_THRESHOLD).sum())
        rows[name] = {**{k: round(v, 4) for k, v in best.items()}, "priors": len(priors),
                      "above_threshold": above, "kept_boxes": len(boxes)}
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guardrail_dir", type=Path, default=None, help="a Cosmos-1.0-Guardrail folder")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=2, help="best of N per frame")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON into this folder")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.guardrail_dir is None:
            torch.manual_seed(0)
            torch.save(RetinaFace(RetinaFaceDims()).state_dict(), Path(tmp) / face_blur.CHECKPOINT_NAME)
            face_dir, weights = Path(tmp), "random (seed 0, as the full-size harness)"
        else:
            face_dir, weights = args.guardrail_dir / FACE_BLUR_DIR, str(args.guardrail_dir)
        rows = measure(face_dir, args.device, args.repeat)
    text = json.dumps({"device": args.device, "weights": weights, "frame": [HEIGHT, WIDTH], "rows": rows}, indent=1)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "face_filter_cost.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

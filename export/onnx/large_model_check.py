"""Check the external-data path on a DiT graph past the 2 GiB protobuf limit, with real (random) weights.

    python -m export.onnx.large_model_check [--blocks 2] [--out /tmp/large_dit]

Builds the 7B Text2World architecture with `--blocks` blocks (2 blocks: 0.58 G parameters, 2.3 GB in fp32) and
seeded random weights, exports it in fp32 (so onnxruntime can run it), checks that the weights went to
<file>.onnx.data, loads that with onnxruntime and compares one small forward pass with torch. Needs about 4x the
weight size in memory; too heavy for the test suite, which checks the same path with a lowered threshold.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from cosmos_triton.models.checkpoints import DIT_PRESETS
from cosmos_triton.models.dit import CosmosDiT, build_model
from export.onnx.graph_io import PROTOBUF_LIMIT, external_data_path, summarize
from export.onnx.stages import export_dit_program, save_program
from export.onnx.verify import OnnxRuntimeEngine, measure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/large_dit"))
    args = parser.parse_args(argv)
    arch = dataclasses.replace(DIT_PRESETS["Cosmos-1.0-Diffusion-7B-Text2World"], num_blocks=args.blocks)
    torch.manual_seed(0)
    net = CosmosDiT(build_model(arch, None, dtype=torch.float32), arch)
    with torch.no_grad():
        for p in net.parameters():  # fan-in scaled, so that activations stay finite through the blocks
            p.copy_(torch.randn_like(p) / (p.shape[-1] ** 0.5 if p.ndim > 1 else 10.0) + (p.ndim == 1))
    start = time.perf_counter()
    path = save_program(export_dit_program(net), args.out / "dit_t2w.onnx")
    summary = summarize(path)
    side = external_data_path(path)
    print(f"exported in {time.perf_counter() - start:.0f} s: {summary.initializer_bytes / 2**30:.2f} GiB of weights "
          f"(limit {PROTOBUF_LIMIT / 2**30:.0f} GiB), graph file {path.stat().st_size / 2**20:.1f} MiB, "
          f"{side.name} {side.stat().st_size / 2**30:.2f} GiB")
    if not (summary.external_data and summary.initializer_bytes >= PROTOBUF_LIMIT):
        raise SystemExit("expected a model past the protobuf limit with external data")
    g = torch.Generator().manual_seed(1)
    inputs = {"x": torch.randn(1, 16, 2, 4, 6, generator=g), "c_noise": torch.tensor([0.3]),
              "context": torch.randn(1, 8, 1024, generator=g)}
    with torch.no_grad():
        want = net(inputs["x"], inputs["c_noise"], inputs["context"], 24.0)
    del net
    got = OnnxRuntimeEngine(path, threads=2).run({**inputs, "fps": torch.tensor(24.0)})["output"]
    print(f"onnxruntime vs torch: {measure(got, want)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""GPU smoke run: the same launcher, server and client on the small checkpoints, stage instances on the GPU.

    python benchmarks/gpu_smoke.py --out DIR [--runs 3]

Prints and writes DIR/gpu_smoke.json: server start-up time, per-request latency through the ensemble (client
wall time), the same request in process on the GPU, whether served frames equal in-process frames, where each
stage's inputs arrived (from the server log), and the GPU's memory use. No speed claim: the small model is tiny.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cosmos_triton.client import text2world as client
from cosmos_triton.client import video2world as v2w_client
from cosmos_triton.deployment import ServeSettings
from cosmos_triton.media.mp4 import probe_mp4
from cosmos_triton.server import running_server
from export.make_small_checkpoints import make_small_checkpoints
from export.small_dit import SMALL_DIT_DIR, SMALL_V2W_DIT_DIR

PROMPT = "A sleek, humanoid robot stands in a vast warehouse filled with neatly stacked cardboard boxes."


def gpu_memory_mib() -> list[str]:
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader"],
                         capture_output=True, text=True)
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    settings = ServeSettings(checkpoint_dir=str(make_small_checkpoints()), dit_dir=SMALL_DIT_DIR,
                             v2w_dit_dir=SMALL_V2W_DIT_DIR)
    log = args.out / "server.log"
    result: dict = {"prompt": PROMPT}

    t0 = time.monotonic()
    with running_server(settings, log_file=log) as server:
        result["server_ready_s"] = round(time.monotonic() - t0, 2)
        latencies = []
        for i in range(args.runs + 1):  # the first request is the warm-up (CUDA kernels, cuDNN autotune)
            t = time.monotonic()
            rc = client.main(["--url", server.grpc_url, "--prompt", PROMPT, "--seed", "1",
                              "--video_save_folder", str(args.out), "--video_save_name", f"served_{i}"])
            latencies.append(round(time.monotonic() - t, 3))
            assert rc == 0, f"client exit {rc}"
        result["served_first_request_s"] = latencies[0]
        result["served_latency_s"] = latencies[1:]
        # Video2World through its client: an image, the default upsampler on (Pixtral writes the prompt)
        import imageio.v3 as iio
        import numpy as np

        image = args.out / "input.png"
        y, x = np.mgrid[0:120, 0:200]
        iio.imwrite(image, np.stack([x, y, x + y], -1).astype(np.uint8))
        v2w_latencies = []
        for i in range(2):
            t = time.monotonic()
            rc = v2w_client.main(["--url", server.grpc_url, "--input_image_or_video_path", str(image),
                                  "--video_save_folder", str(args.out), "--video_save_name", f"v2w_{i}"])
            v2w_latencies.append(round(time.monotonic() - t, 3))
            assert rc == 0, f"video2world client exit {rc}"
        result["v2w_served_latency_s"] = v2w_latencies
        result["v2w_prompt_used"] = (args.out / "v2w_1.txt").read_text()
        result["gpu_memory_while_serving"] = gpu_memory_mib()
    served = (args.out / "served_1.mp4").read_bytes()
    result["served_video"] = probe_mp4(served)

    import torch

    from cosmos_triton.pipeline.inprocess import InProcessStages, Pipeline
    from cosmos_triton.pipeline.model_types import TEXT2WORLD

    pipe = Pipeline(TEXT2WORLD, InProcessStages(settings, device="cuda:0"))
    times = []
    for _ in range(args.runs + 1):
        torch.cuda.synchronize()
        t = time.monotonic()
        generation = pipe(prompt=PROMPT, seed=1)
        torch.cuda.synchronize()
        times.append(round(time.monotonic() - t, 3))
    result["in_process_latency_s"] = times[1:]
    result["in_process_peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    result["served_frames_equal_in_process"] = served == generation.video
    text = log.read_text(errors="replace")
    result["stage_inputs"] = re.findall(r"(\w+: inputs .*)", text)
    result["instances"] = sorted(set(re.findall(r"ModelInstanceInitialize: (\S+ \((?:CPU|GPU)[^)]*\))", text)))
    result["device"] = torch.cuda.get_device_name(0)
    (args.out / "gpu_smoke.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

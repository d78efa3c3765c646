"""One served scenario at full size: our launcher and Triton server on the full-size checkpoints, requests through
our client, and what a platform team needs to know about them.

    python -m benchmarks.fullsize.serve --checkpoint_dir /data/ckpt --model 7B --task t2w --steps 4 --out $OUT

Reports (JSON in --out, one file per scenario, rewritten after each phase so a timeout leaves data): server start
to ready; end-to-end latency of the measured request and its extrapolation to the requested full step count
(measured DiT evaluation time x the evaluations not run); seconds per stage (our metrics: every BLS call from the
entry point); the DiT evaluation as the entry point sees it vs the DiT step's own compute (Triton's statistics),
whose difference is the BLS/IPC overhead per step; peak GPU memory of every stage process (nvidia-smi per pid,
CUDA context included) and their sum; optionally two concurrent requests (do they overlap?) and perf_analyzer
against the same server (`--perf_analyzer 1:2`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from cosmos_triton.client import common  # noqa: E402
from cosmos_triton.deployment import ServeSettings, ServingOptions  # noqa: E402
from cosmos_triton.server import running_server  # noqa: E402

PROMPT = ("A sleek, humanoid robot stands in a vast warehouse filled with neatly stacked cardboard boxes on industrial "
          "shelves. The camera remains static, capturing the robot's poised stance amidst the orderly environment.")
SIZES = {"t2w": (704, 1280), "v2w": (704, 1280)}


def log(message: str) -> None:
    print(f"[serve {time.strftime('%H:%M:%S')}] {message}", flush=True)


class GpuMemory(threading.Thread):
    """Peak used memory per process (nvidia-smi), mapped to stub instance names; idle without a GPU."""

    def __init__(self, server_pid: int, interval_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.server_pid, self.interval_s = server_pid, interval_s
        self.peak: dict[str, float] = {}
        self.peak_total = 0.0
        self.stop = threading.Event()

    def sample(self) -> dict[str, float]:
        try:
            query = ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
            out = subprocess.run(query, capture_output=True, text=True, timeout=10, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            return {}
        pid_names = {}
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    cmd = (proc / "cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if len(cmd) > 8 and cmd[0].endswith(b"triton_python_backend_stub"):
                    pid_names[int(proc.name)] = cmd[8].decode(errors="replace")
                elif int(proc.name) == self.server_pid:
                    pid_names[int(proc.name)] = "tritonserver"
        used = {}
        for line in out.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 2 and parts[0].isdigit():
                pid = int(parts[0])
                used[pid_names.get(pid, f"pid {pid}")] = float(parts[1]) / 1024  # GiB
        return used

    def run(self) -> None:
        while not self.stop.wait(self.interval_s):
            used = self.sample()
            for name, gib in used.items():
                self.peak[name] = max(self.peak.get(name, 0.0), gib)
            self.peak_total = max(self.peak_total, sum(used.values()))


def scrape(url: str) -> dict[tuple[str, str], float]:
    """(metric name, label text) -> value, for our series and Triton's per-model counters."""
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        match = re.match(r"^(\w+)(\{[^}]*\})? ([-+0-9.eE]+|NaN)$", line)
        if match and (match.group(1).startswith(("cosmos_", "nv_inference_"))):
            values[(match.group(1), match.group(2) or "")] = float(match.group(3))
    return values


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    total = 0.0
    for (metric, label_text), value in after.items():
        if metric == name and all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += value - before.get((metric, label_text), 0.0)
    return total


def request(url: str, entry: str, fields: dict[str, Any], timeout: float = 3000) -> dict[str, Any]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    point = common.EntryPoint(client, entry, url)
    steps: list[float] = []
    start = time.monotonic()
    video, used = common.generate(point, point.resolve(fields), timeout,
                                  progress=lambda _s, _t: steps.append(time.monotonic() - start))
    client.close()
    return {"e2e_s": time.monotonic() - start, "step_times_s": steps, "video_bytes": len(video), "prompt_used": used}


def stage_seconds(before: dict, after: dict, stages: list[str]) -> dict[str, float]:
    return {s: round(delta(before, after, "cosmos_stage_seconds_sum", stage=s), 3) for s in stages}


def visual_input(height: int, width: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    buffer = io.BytesIO()
    Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def measure(server: Any, task: str, args: argparse.Namespace, result: dict[str, Any], save: Any) -> None:
    """One warm-up request (1 step) and one measured request of `task`, through the streaming entry point."""
    height, width = args.height or SIZES[task][0], args.width or SIZES[task][1]
    fields: dict[str, Any] = {"prompt": PROMPT, "num_steps": args.steps, "height": height, "width": width,
                              "disable_prompt_upsampler": not args.upsampler, "seed": 1,
                              "cache_threshold": args.cache_threshold}
    if task == "v2w":
        fields |= {"visual_input": visual_input(height, width), "num_input_frames": 1}
    entry = "text2world" if task == "t2w" else "video2world"
    log(f"{task}: warm-up request")
    warm = request(server.grpc_url, entry, {**fields, "num_steps": 1})
    out: dict[str, Any] = {"warmup_e2e_s": round(warm["e2e_s"], 2)}
    result[task] = out
    save()
    before = scrape(server.metrics_url)
    log(f"{task}: measured request ({args.steps} steps)")
    measured = request(server.grpc_url, entry, fields)
    after = scrape(server.metrics_url)
    stages = sorted({dict(re.findall(r'(\w+)="([^"]*)"', lbl)).get("stage", "") for (m, lbl) in after
                     if m == "cosmos_stage_seconds_sum"} - {""})
    evals = args.steps + 1
    dit_model = "dit_step" if task == "t2w" else "dit_step_v2w"
    step_entry = delta(before, after, "cosmos_denoise_step_seconds_sum", entry=f"{entry}_stream") / evals  # streamed
    compute = delta(before, after, "nv_inference_compute_infer_duration_us", model=dit_model) / 1e6 / evals
    out |= {
        "e2e_s": round(measured["e2e_s"], 2),
        "dit_eval_s": round(step_entry, 3),
        "dit_compute_s": round(compute, 3),
        "bls_overhead_per_step_s": round(step_entry - compute, 4),
        "bls_overhead_fraction": round((step_entry - compute) / step_entry, 5) if step_entry else None,
        "stages": stage_seconds(before, after, stages) | {"dit_step (all evaluations)": round(step_entry * evals, 2)},
        "e2e_extrapolated_s": round(measured["e2e_s"] + (args.full_steps + 1 - evals) * step_entry, 1),
        "dit_s_extrapolated": round((args.full_steps + 1) * step_entry, 1),
    }
    save()
    log(f"{task}: e2e {out['e2e_s']} s for {args.steps} steps -> {out['e2e_extrapolated_s']} s for "
        f"{args.full_steps}; DiT eval {step_entry:.2f} s (compute {compute:.2f} s)")
    if args.concurrent and task == "t2w":
        start = time.monotonic()
        outs: list[dict[str, Any]] = []
        threads = [threading.Thread(target=lambda s=seed: outs.append(request(server.grpc_url, entry,
                                                                             {**fields, "seed": s})))
                   for seed in (2, 3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        out |= {"two_concurrent_wall_s": round(time.monotonic() - start, 2),
                "two_concurrent_e2e_s": sorted(round(o["e2e_s"], 2) for o in outs),
                "two_sequential_estimate_s": round(2 * measured["e2e_s"], 2)}
        save()


PERF_SUMMARY = re.compile(r"Concurrency: (\d+), throughput: ([\d.]+) infer/sec, latency (\d+) usec")


def perf_analyzer(server: Any, args: argparse.Namespace, result: dict[str, Any], save: Any, label: str) -> None:
    """perf_analyzer (benchmarks/perf_analyzer.sh: the tritonclient wheel's binary) on this server's Text2World
    entry point with this scenario's fields: count windows of one request (each is a whole video), three windows per
    concurrency level of --perf_analyzer (e.g. 1:2); its CSV (-f) beside the JSON."""
    height, width = args.height or SIZES["t2w"][0], args.width or SIZES["t2w"][1]
    data = json.loads((REPO / "benchmarks/perf_analyzer/text2world.json").read_text())
    data["data"][0] |= {"prompt": [PROMPT], "num_steps": [args.steps], "height": [height], "width": [width],
                        "disable_prompt_upsampler": [not args.upsampler]}
    inputs, csv = args.out / f"perf_input_{label}.json", args.out / f"perf_{label}.csv"
    inputs.write_text(json.dumps(data))
    # three one-request windows per level, taken as they come: at one request per window, concurrency 2 alternates
    # between windows where one and two requests finish and never looks "stable" by perf_analyzer's 100 %; no
    # per-stage report (COMPOSING empty: a stage's statistics can land after a one-request window closes, which
    # stops perf_analyzer; the stage split is the measured request's, above)
    env = {**os.environ, "INPUT": str(inputs), "REQUESTS": "1", "TRIALS": "3", "STABILITY": "1000", "COMPOSING": ""}
    log(f"perf_analyzer, concurrency {args.perf_analyzer}")
    start = time.monotonic()
    done = subprocess.run(["bash", str(REPO / "benchmarks/perf_analyzer.sh"), "text2world", server.grpc_url,
                           args.perf_analyzer, "-f", str(csv)], env=env, capture_output=True, text=True)
    result["perf_analyzer"] = {
        "exit": done.returncode, "wall_s": round(time.monotonic() - start, 1), "csv": csv.name,
        "summary": [{"concurrency": int(c), "throughput_per_s": float(t), "latency_s": int(us) / 1e6}
                    for c, t, us in PERF_SUMMARY.findall(done.stdout)],
        "output_tail": (done.stdout + done.stderr)[-4000:]}
    save()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint_dir", required=True)
    parser.add_argument("--model", default="7B")
    parser.add_argument("--tasks", nargs="+", choices=["t2w", "v2w"], default=["t2w"])
    parser.add_argument("--steps", type=int, default=4, help="denoising steps measured")
    parser.add_argument("--full_steps", type=int, default=35, help="steps the extrapolation is for")
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--upsampler", action="store_true", help="leave the prompt upsampler on")
    parser.add_argument("--cache_threshold", type=float, default=0.0)
    parser.add_argument("--concurrent", action="store_true", help="also two Text2World requests at once")
    parser.add_argument("--perf_analyzer", default=None, metavar="RANGE",
                        help="then perf_analyzer on Text2World at these concurrencies, e.g. 1:2")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--log_dir", type=Path, default=None, help="where the server log goes (default: --out)")
    parser.add_argument("--label", default="exact")
    parser.add_argument("serve_args", nargs="*", help="launcher flags after --, e.g. -- --dit_mode fp8")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    label = f"{args.model}-{args.label}"
    result: dict[str, Any] = {"scenario": label, "model": args.model, "mode": args.label,
                              "steps_measured": args.steps, "launcher_flags": args.serve_args}
    path = args.out / f"serve_{label}.json"

    def save() -> None:
        path.write_text(json.dumps(result, indent=1))

    from cosmos_triton.server.cli import models_from_args, parse_args

    cli_args, _ = parse_args(["--checkpoint_dir", args.checkpoint_dir, *args.serve_args])
    dit = f"Cosmos-1.0-Diffusion-{args.model}"
    settings = ServeSettings(checkpoint_dir=args.checkpoint_dir, dit_dir=f"{dit}-Text2World",
                             v2w_dit_dir=f"{dit}-Video2World", entry_points=tuple(cli_args.entry_points))
    t0 = time.monotonic()
    log(f"{label}: starting the server")
    with running_server(settings, log_file=(args.log_dir or args.out) / f"server_{label}.log", ready_timeout_s=1200,
                        serving=ServingOptions(entry_instances=cli_args.entry_instances),
                        models=models_from_args(cli_args)) as server:
        result["server_ready_s"] = round(time.monotonic() - t0, 1)
        save()
        memory = GpuMemory(server.process.pid)
        memory.start()
        try:
            for task in args.tasks:
                measure(server, task, args, result, save)
            if args.perf_analyzer:
                perf_analyzer(server, args, result, save, label)
        finally:
            memory.stop.set()
            memory.join(5)
            result["peak_gib_by_process"] = {k: round(v, 2) for k, v in sorted(memory.peak.items())}
            result["peak_gib_sum_of_process_peaks"] = round(sum(memory.peak.values()), 2)
            result["peak_gib"] = round(memory.peak_total, 2)
            save()
    log(f"done: {path}")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

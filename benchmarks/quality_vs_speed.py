"""What each speed option costs in quality, measured on the trained small model (checkpoints/small).

    python benchmarks/quality_vs_speed.py [--steps 20 12 8] [--modes fp8 step_cache] [--cache_thresholds 0.2 0.3 0.5]
        [--cases 8] [--out benchmarks/results/quality_vs_speed.json]

For each oracle caption (seen colour x direction pairs) the exact output (35 steps, guidance 7, default negative
prompt, the caption's fixed seed) is the reference; every mode is compared with it: PSNR and SSIM of the frames,
colour and direction accuracy (cosmos_triton.synthetic.metrics), seconds per video. Modes: fewer sampling steps;
--modes names entries of cosmos_triton.synthetic.speed_quality.MODE_FACTORIES (fp8: FP8 GEMMs in the DiT blocks,
which need a CUDA GPU of compute capability 8.9+, else reported as not measured; step_cache: the per-request step
cache at its default threshold 0.1), plus the step cache at each of --cache_thresholds. Prints a markdown table
and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cosmos_triton.deployment import ServeSettings
from cosmos_triton.synthetic.generation import load_text2world
from cosmos_triton.synthetic.oracle import oracle_cases, select
from cosmos_triton.synthetic.speed_quality import MODE_FACTORIES, compare, fewer_steps, markdown_table, step_cache
from export.make_small_checkpoints import make_small_checkpoints, trained_components
from export.small_dit import SMALL_DIT_DIR, SMALL_V2W_DIT_DIR


def spread_cases(n: int) -> list:
    """n seen cases spread over the colours and directions (every k-th of the 20)."""
    seen = select(oracle_cases(), "seen")
    step = max(1, len(seen) // n)
    return seen[::step][:n]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint_dir", type=Path, default=None, help="default: checkpoints/small (built)")
    parser.add_argument("--steps", type=int, nargs="*", default=[20, 12, 8])
    parser.add_argument("--modes", nargs="*", default=["fp8", "step_cache"])
    parser.add_argument("--cache_thresholds", type=float, nargs="*", default=[0.2, 0.3, 0.5],
                        help="further step-cache thresholds (the step_cache mode is the default one)")
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quality_vs_speed.json"))
    args = parser.parse_args(argv)

    root = args.checkpoint_dir or make_small_checkpoints()
    settings = ServeSettings(checkpoint_dir=str(root), dit_dir=SMALL_DIT_DIR, v2w_dit_dir=SMALL_V2W_DIT_DIR)
    reference = load_text2world(settings)
    modes, unavailable = [fewer_steps(s) for s in args.steps], {}
    for name in args.modes:
        try:
            modes.append(MODE_FACTORIES[name](settings))
        except (KeyError, RuntimeError) as err:  # unknown name, or not available on this host (FP8 on a CPU)
            unavailable[name] = str(err)
    modes += [step_cache(t) for t in args.cache_thresholds]
    cases = spread_cases(args.cases)
    t0 = time.perf_counter()
    result = compare(reference, modes, cases)
    result.update(checkpoint_dir=str(root), trained=sorted(trained_components()), unavailable=unavailable,
                  cases=[c.to_dict() for c in cases], seconds=round(time.perf_counter() - t0, 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown_table(result["summary"]))
    for name, why in unavailable.items():
        print(f"{name}: not measured ({why})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

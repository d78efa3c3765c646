"""Caption adherence of the built-in small model over the whole oracle caption set, in process on CPU.

    python benchmarks/small_model_accuracy.py [--steps 35] [--out benchmarks/results/small_model_accuracy.json]

Text2World on all 30 oracle cases (20 seen colour x direction pairs, 4 held-out pairs, 6 held-out phrasings) with
guidance 7 and with guidance 0, the default negative prompt, upsampler disabled; Video2World on the seen cases
given the first 9 frames of the rendered ground truth. Reports colour accuracy (named colour present in >= 75 %
of frames), direction accuracy (centroid travel), per group, as JSON and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cosmos_triton.deployment import ServeSettings
from cosmos_triton.synthetic.generation import load_text2world, load_video2world
from cosmos_triton.synthetic.metrics import adherence, psnr
from cosmos_triton.synthetic.oracle import oracle_cases, score, select, summarise
from cosmos_triton.synthetic.render import render_clip
from cosmos_triton.synthetic.scenes import oracle_scene
from export.make_small_checkpoints import make_small_checkpoints, trained_components
from export.small_dit import SMALL_DIT_DIR, SMALL_V2W_DIT_DIR


def table(summaries: dict[str, dict]) -> str:
    lines = ["| run | group | n | colour acc. | direction acc. | both |", "|---|---|---|---|---|---|"]
    for run, summary in summaries.items():
        for group, s in summary.items():
            if s.get("n"):
                lines.append(f"| {run} | {group} | {s['n']} | {s['colour_accuracy']:.2f} | "
                             f"{s['direction_accuracy']:.2f} | {s['both_accuracy']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint_dir", type=Path, default=None, help="default: checkpoints/small (built)")
    parser.add_argument("--steps", type=int, default=35)
    parser.add_argument("--v2w_cases", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/small_model_accuracy.json"))
    args = parser.parse_args(argv)
    root = args.checkpoint_dir or make_small_checkpoints()
    settings = ServeSettings(checkpoint_dir=str(root), dit_dir=SMALL_DIT_DIR, v2w_dit_dir=SMALL_V2W_DIT_DIR)
    t0 = time.perf_counter()
    t2w = load_text2world(settings)
    cases = oracle_cases()
    result: dict = {"checkpoint_dir": str(root), "trained": sorted(trained_components()), "steps": args.steps}
    result["text2world"], result["text2world_cases"] = score(t2w, cases, num_steps=args.steps)
    result["text2world_guidance_0"], _ = score(t2w, select(cases, "seen"), num_steps=args.steps, guidance=0.0)
    v2w = load_video2world(settings)
    rows, kept = [], []
    for case in select(cases, "seen", limit=args.v2w_cases):
        truth = render_clip(oracle_scene(case.colour, case.shape, case.direction, case.seed), 96, 160).numpy()
        out = v2w(case.prompt, case.seed, truth[:9], num_steps=args.steps)
        rows.append((case, adherence(out, case.colour, case.direction)))
        kept.append(psnr(out[:9], truth[:9]))
    result["video2world"] = {**summarise(rows)["all"], "kept_frames_psnr_db_vs_rendered": sum(kept) / len(kept)}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table({"text2world g=7": result["text2world"], "text2world g=0": result["text2world_guidance_0"],
                 "video2world (9 frames)": {"all": result["video2world"]}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

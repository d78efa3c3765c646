"""benchmarks/results/summary.json from the raw GPU outputs in benchmarks/results/h200/ (machine-readable rows:
model, task, mode, gpus, e2e_s, dit_s, stages, peak_gib, diffusers_e2e_s, ratio, steps_measured, deviation,
device, date, commit, command).

    python -m benchmarks.fullsize.summarize
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "results"
RAW = RESULTS / "h200"
DEVICE, DATE, COMMIT = "NVIDIA H200 (1 GPU), torch 2.11.0+cu130", "2026-12-01", "e56e08e"
EVALUATIONS = 36  # 35 steps + the final clean x0
PREPARE = "OUT=$OUT bash benchmarks/fullsize/run_h200.sh prepare"
SERVE = "OUT=$OUT bash benchmarks/fullsize/run_h200.sh serve"
DIT14 = ("python3 benchmarks/dit_modes.py --model Cosmos-1.0-Diffusion-14B-Text2World "
         "--rows exact_eager,alternative,exact_compile,fp8_compile --budget-s 165 --out $OUT")


def _load(name: str) -> dict[str, Any]:
    return json.loads((RAW / name).read_text())


def other_stages_s() -> float:
    """Every stage of a served request but the DiT and the Video2World encoder (T5, text guardrail, decode, video
    guardrail, mp4) as the fp8 server run measured them: what the per-forward rows add for end to end."""
    stages = _load("serve_7B-fp8.json")["v2w"]["stages"]
    return round(sum(s for name, s in stages.items() if not name.startswith(("dit_step", "tokenizer_encoder"))), 1)


def _row(**fields: Any) -> dict[str, Any]:
    base = {"task": "t2w", "gpus": 1, "stages": None, "device": DEVICE, "date": DATE, "commit": COMMIT}
    return base | fields


def dit_rows(model: str, name: str, command: str, other: float) -> list[dict[str, Any]]:
    """Per-forward rows, extrapolated to 72 forwards plus `other` seconds of measured other stages."""
    modes = {r["name"]: r for r in _load(name)["rows"]}
    reference = modes["alternative"]["forward_s"]
    rows = []
    for key, mode in (("exact_compile", "exact"), ("fp8_compile", "fp8"), ("exact_eager", "exact (eager reference)")):
        if key not in modes:
            continue
        forward = modes[key]["forward_s"]
        dit = 2 * EVALUATIONS * forward
        rows.append(_row(
            model=model, mode=mode, e2e_s=round(dit + other, 1), dit_s=round(dit, 1),
            peak_gib=modes[key]["peak_gib"], diffusers_e2e_s=round(2 * EVALUATIONS * reference + other, 1),
            ratio=round(reference / forward, 3), steps_measured=0,
            deviation={"one_forward": {"max_abs": modes[key]["max_abs"], "rel_l2": modes[key]["rel_l2"]}},
            note=f"in process: {forward} s per forward (diffusers {reference} s); e2e extrapolated as 72 forwards + "
                 f"{other} s of other stages (served, measured)", command=command))
    return rows


def cache_rows(other: float) -> list[dict[str, Any]]:
    data = _load("dit_modes_7B.json")
    rows = []
    for entry in data.get("cache", []):
        if not entry.get("threshold"):
            continue
        forward = {r["name"]: r for r in data["rows"]}["exact_compile"]["forward_s"]
        dit = 2 * EVALUATIONS * forward / entry["speedup"]
        rows.append(_row(
            model="7B", mode=f"cache (teacache {entry['threshold']})", e2e_s=round(dit + other, 1),
            dit_s=round(dit, 1), peak_gib=entry["peak_gib"], diffusers_e2e_s=None, ratio=None,
            steps_measured=entry["steps"],
            deviation={"final_latent": entry["final"], "step_x0": entry["step_x0"],
                       "skipped": f"{entry['skipped']}/{entry['evaluations']}"},
            note="3-step sampling run; the speed-up over 35 steps is not shown by it", command=PREPARE))
    return rows


def served_rows() -> list[dict[str, Any]]:
    served, alternative = _load("serve_7B-exact.json"), _load("diffusers_7B-t2w.json")
    t2w = served["t2w"]
    stages = t2w["stages"]
    ours_same_parts = t2w["dit_s_extrapolated"] + stages["tokenizer_decoder"] + stages["t5_encoder"]
    return [_row(
        model="7B", mode="exact (served through Triton)", e2e_s=t2w["e2e_extrapolated_s"],
        dit_s=t2w["dit_s_extrapolated"], stages=stages, peak_gib=served["peak_gib"],
        diffusers_e2e_s=alternative["e2e_s_extrapolated"],
        ratio=round(alternative["e2e_s_extrapolated"] / ours_same_parts, 3), steps_measured=served["steps_measured"],
        deviation=None, bls_overhead_per_step_s=round(t2w["dit_eval_s"] - 2 * 3.6428, 3),
        note="ratio on the parts diffusers runs (DiT loop, decode, T5); the video-guardrail time of this run is "
             "invalid (full-size SigLIP kept the small preprocessor: every frame failed) and LlamaGuard was "
             "undersized; peak_gib with both entry points served", command=SERVE)]


# the second GPU session's served runs (commit 093592d): offloaded servers and fp8 through Triton
SERVE2 = "OUT=$OUT bash benchmarks/fullsize/run_h200.sh serve2"
SERVE3 = "OUT=$OUT bash benchmarks/fullsize/run_h200.sh serve3"
SERVE4 = "OUT=$OUT bash benchmarks/fullsize/run_h200.sh serve4"
SERVE4_COMMIT = "672c81f"  # run on f32cc7b with the DiT stage change that 672c81f committed with the results
SERVED_LATER = (  # raw file, entry point, mode, command, note, commit
    ("serve_7B-offload-all.json", "t2w", "offload-all (stage offload, served through Triton)", SERVE2,
     "all five --offload_* flags, each stage uploads its weights from pinned host memory for its phase", "093592d"),
    ("serve_7B-offload-blocks.json", "t2w", "offload-all + blocks (served through Triton)", SERVE2,
     "--offload_mode blocks --dit_offload blocks: every offloaded stage streams its blocks (eager DiT: no compile); "
     "the text guardrail streams LlamaGuard once per generated token", "093592d"),
    ("serve_7B-fp8.json", "v2w", "fp8 (served through Triton)", SERVE3,
     "--dit_mode fp8; run as a 230 s step, in which only the Video2World request fitted (no memory sample written); "
     "serve3 gives the step the time for both", "093592d"),
    ("serve_7B-offload-blocks-t2w-only.json", "t2w", "offload-all + blocks, compiled, Text2World only (served "
     "through Triton)", SERVE4,
     "the blocks row with the streamed DiT compiled, --entry_points text2world --entry-instances 1: the 16 GiB "
     "setting", SERVE4_COMMIT),
)


def served_later_rows() -> list[dict[str, Any]]:
    resident_eval = _load("serve_7B-exact.json")["t2w"]["dit_eval_s"]
    rows = []
    for name, task, mode, command, note, commit in SERVED_LATER:
        served = _load(name)
        run = served[task]
        rows.append(_row(
            task=task, model="7B", mode=mode, e2e_s=run["e2e_extrapolated_s"], dit_s=run["dit_s_extrapolated"],
            stages=run["stages"], peak_gib=served.get("peak_gib"), diffusers_e2e_s=None, ratio=None,
            steps_measured=served["steps_measured"], deviation=None,
            bls_overhead_per_step_s=run["bls_overhead_per_step_s"],
            dit_eval_vs_resident_exact=round(run["dit_eval_s"] / resident_eval, 3),
            peak_gib_sum_of_process_peaks=served.get("peak_gib_sum_of_process_peaks"),
            note=note + "; random weights: the text guardrail generates up to its token limit (a trained LlamaGuard "
                        "stops after its verdict), so its time is an upper bound",
            commit=commit, command=command))
    return rows


MEMORY14 = "python3 benchmarks/memory.py --dit 14B --skip context,bandwidth,decode,decode-bmm --budget-s 120 --out $OUT"
MEMORY_SOURCES = (  # raw file, model, resident row, rows against it, label of the resident row, command, commit
    ("memory_7B.json", "7B", "resident", ("blocks-warm", "stage-offload"), "", PREPARE, COMMIT),
    ("memory_14B.json", "14B", "resident", ("blocks-warm", "stage-offload"), "", MEMORY14, COMMIT),
    ("memory_7B_compiled.json", "7B", "compiled-resident", ("compiled-blocks-warm",), "compiled ", SERVE4,
     SERVE4_COMMIT),
)


def memory_rows() -> list[dict[str, Any]]:
    rows = []
    for name, model, base, settings, label, command, commit in MEMORY_SOURCES:
        by_row = {r["row"]: r for r in _load(name)["rows"]}
        resident = by_row.get(f"dit/{model}/{base}")
        for setting in settings:
            row = by_row.get(f"dit/{model}/{setting}")
            if row is None or resident is None:
                continue
            rows.append(_row(
                model=model, mode=f"memory: DiT {setting} (one guided evaluation)", e2e_s=None,
                dit_s=round(EVALUATIONS * row["s"], 1), peak_gib=row["peak_alloc_gb"], diffusers_e2e_s=None,
                ratio=round(resident["s"] / row["s"], 4), steps_measured=0,
                deviation={"max_abs_vs_resident": row["max_abs_vs_resident"]},
                note=f"{label}resident: {resident['s']} s, peak {resident['peak_alloc_gb']} GB (allocator peaks)",
                commit=commit, command=command))
    return rows


def main() -> int:
    other = other_stages_s()
    rows = [*served_rows(), *served_later_rows(), *dit_rows("7B", "dit_modes_7B.json", PREPARE, other),
            *dit_rows("14B", "dit_modes_14B.json", DIT14, other), *cache_rows(other), *memory_rows()]
    (RESULTS / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"{len(rows)} rows -> {RESULTS / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

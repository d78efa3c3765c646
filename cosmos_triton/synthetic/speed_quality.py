"""The quality cost of a speed option: each mode's output against the exact 35-step output with the same seed.

A mode is options for the reference `generate(prompt, seed, **options)` (fewer steps: {"num_steps": 12}) or its
own callable with the same signature (an FP8 pipeline, a step-caching sampler). For every case and mode this
measures PSNR and SSIM against the exact output, the caption adherence (colour present, direction), and the
wall time. New modes plug in through MODE_FACTORIES: a factory gets the checkpoint settings and returns a
SpeedMode.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cosmos_triton.synthetic.metrics import adherence, psnr, ssim
from cosmos_triton.synthetic.oracle import Case

EXACT_STEPS = 35
Generate = Callable[..., np.ndarray]


@dataclass(frozen=True)
class SpeedMode:
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    generate: Generate | None = None  # None: the reference callable with `options`


def fewer_steps(steps: int) -> SpeedMode:
    return SpeedMode(f"steps={steps}", {"num_steps": steps})


# Step caching's relative-change threshold (cosmos_triton.models.dit_speed: a block evaluation is skipped while the
# accumulated change of its input stays below it); 0 is exact.
STEP_CACHE_THRESHOLD = 0.1


def step_cache(threshold: float = STEP_CACHE_THRESHOLD) -> SpeedMode:
    """The per-request step cache: a request option of the exact model."""
    return SpeedMode(f"step_cache={threshold:g}", {"cache_threshold": threshold})


def fp8(settings: Any, device: str = "cpu") -> SpeedMode:
    """FP8 GEMMs in the DiT blocks (ModelOptions(dit_mode="fp8"): a deployment choice, so its own pipeline). The
    DiT stage is loaded here, so that a host without FP8 GEMMs (CUDA sm_89+) raises RuntimeError now."""
    from cosmos_triton.deployment import ModelOptions
    from cosmos_triton.pipeline.inprocess import InProcessStages, Pipeline
    from cosmos_triton.pipeline.model_types import TEXT2WORLD
    from cosmos_triton.synthetic.generation import text2world_generator

    stages = InProcessStages(settings, device, ModelOptions(dit_mode="fp8"))
    stages.stage(TEXT2WORLD.dit_model)
    return SpeedMode("fp8", generate=text2world_generator(Pipeline(TEXT2WORLD, stages)))


# name -> factory(ServeSettings) -> SpeedMode; fewer steps take a number instead (fewer_steps).
MODE_FACTORIES: dict[str, Callable[[Any], SpeedMode]] = {
    "fp8": fp8,
    "step_cache": lambda _settings: step_cache(),
}


def _timed(fn: Generate, *args: Any, **kwargs: Any) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def compare(reference: Generate, modes: list[SpeedMode], cases: list[Case]) -> dict:
    """Per mode: mean PSNR / SSIM against the exact output, colour / direction accuracy, mean seconds."""
    rows: dict[str, list[dict]] = {"exact": [], **{m.name: [] for m in modes}}
    for case in cases:
        exact, seconds = _timed(reference, case.prompt, case.seed, num_steps=EXACT_STEPS)
        a = adherence(exact, case.colour, case.direction)
        rows["exact"].append({"prompt": case.prompt, "seconds": seconds, "colour_ok": a.colour_ok,
                              "direction_ok": a.direction_ok, "psnr_db": float("inf"), "ssim": 1.0})
        for mode in modes:
            fn = mode.generate or reference
            out, seconds = _timed(fn, case.prompt, case.seed, **mode.options)
            a = adherence(out, case.colour, case.direction)
            rows[mode.name].append({"prompt": case.prompt, "seconds": seconds, "colour_ok": a.colour_ok,
                                    "direction_ok": a.direction_ok, "psnr_db": psnr(out, exact),
                                    "ssim": ssim(out, exact)})
    summary = {}
    exact_time = float(np.mean([r["seconds"] for r in rows["exact"]]))
    for name, rs in rows.items():
        finite = [r["psnr_db"] for r in rs if np.isfinite(r["psnr_db"])]
        summary[name] = {
            "cases": len(rs),
            "psnr_db": float(np.mean(finite)) if finite else float("inf"),
            "ssim": float(np.mean([r["ssim"] for r in rs])),
            "colour_accuracy": float(np.mean([r["colour_ok"] for r in rs])),
            "direction_accuracy": float(np.mean([r["direction_ok"] for r in rs])),
            "seconds": float(np.mean([r["seconds"] for r in rs])),
            "speedup": exact_time / float(np.mean([r["seconds"] for r in rs])),
        }
    return {"summary": summary, "rows": rows}


def markdown_table(summary: dict) -> str:
    lines = ["| mode | PSNR vs exact (dB) | SSIM vs exact | colour acc. | direction acc. | s / video | speed-up |",
             "|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        psnr_text = "exact" if not np.isfinite(s["psnr_db"]) else f"{s['psnr_db']:.1f}"
        lines.append(f"| {name} | {psnr_text} | {s['ssim']:.3f} | {s['colour_accuracy']:.2f} | "
                     f"{s['direction_accuracy']:.2f} | {s['seconds']:.1f} | {s['speedup']:.2f}x |")
    return "\n".join(lines)

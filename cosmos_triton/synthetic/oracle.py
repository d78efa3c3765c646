"""The fixed evaluation caption set of the small model and its scoring.

Each case is "a <colour> <shape> moving <direction>" with a fixed seed. Groups:
- "seen": a colour x direction pair present in training, in the canonical training phrasing;
- "held_out_pair": a pair from scenes.HELD_OUT_PAIRS (never trained), canonical phrasing;
- "held_out_phrasing": a seen pair in a phrasing from captions.EVAL_TEMPLATES (never trained).

`score` runs any `generate(prompt, seed) -> uint8 [T, H, W, 3]` over the cases and reports accuracies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import numpy as np

from cosmos_triton.synthetic.captions import EVAL_TEMPLATES, canonical_caption, eval_caption
from cosmos_triton.synthetic.metrics import Adherence, adherence
from cosmos_triton.synthetic.scenes import COLOURS, DIRECTIONS, HELD_OUT_PAIRS, SHAPES

GROUPS = ("seen", "held_out_pair", "held_out_phrasing")
Generate = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Case:
    colour: str
    shape: str
    direction: str
    prompt: str
    seed: int
    group: str

    def to_dict(self) -> dict:
        return asdict(self)


def oracle_cases() -> list[Case]:
    """Every colour with every direction (24 cases: 20 seen, 4 held-out pairs), shapes rotating, plus one
    held-out phrasing per colour (6 cases, seen pairs). Seeds are fixed per case."""
    cases: list[Case] = []
    for i, colour in enumerate(COLOURS):
        for j, direction in enumerate(DIRECTIONS):
            shape = SHAPES[(i + j) % len(SHAPES)]
            group = "held_out_pair" if (colour, f"move_{direction}") in HELD_OUT_PAIRS else "seen"
            cases.append(Case(colour, shape, direction, canonical_caption(colour, shape, direction), 100 + 4 * i + j,
                              group))
    for i, colour in enumerate(COLOURS):
        direction = DIRECTIONS[(i + 1) % len(DIRECTIONS)]
        if (colour, f"move_{direction}") in HELD_OUT_PAIRS:
            direction = DIRECTIONS[(i + 2) % len(DIRECTIONS)]
        shape = SHAPES[i % len(SHAPES)]
        cases.append(Case(colour, shape, direction, eval_caption(colour, shape, direction, i % len(EVAL_TEMPLATES)),
                          200 + i, "held_out_phrasing"))
    return cases


def select(cases: Iterable[Case], group: str | None = None, limit: int | None = None) -> list[Case]:
    chosen = [c for c in cases if group is None or c.group == group]
    return chosen[:limit] if limit is not None else chosen


def summarise(results: list[tuple[Case, Adherence]]) -> dict:
    """Colour accuracy, direction accuracy and both-correct rate, overall and per group."""
    def stats(rows: list[tuple[Case, Adherence]]) -> dict:
        n = len(rows)
        if n == 0:
            return {"n": 0}
        return {
            "n": n,
            "colour_accuracy": sum(a.colour_ok for _, a in rows) / n,
            "direction_accuracy": sum(a.direction_ok for _, a in rows) / n,
            "both_accuracy": sum(a.colour_ok and a.direction_ok for _, a in rows) / n,
            "mean_presence": float(np.mean([a.presence for _, a in rows])),
        }

    out = {"all": stats(results)}
    for group in GROUPS:
        rows = [(c, a) for c, a in results if c.group == group]
        if rows:
            out[group] = stats(rows)
    return out


def score(generate: Generate, cases: Iterable[Case], **options) -> tuple[dict, list[dict]]:
    """Generate every case (prompt, seed, **options) and score it; returns (summary, per-case rows)."""
    results = []
    for case in cases:
        frames = generate(case.prompt, case.seed, **options)
        results.append((case, adherence(frames, case.colour, case.direction)))
    rows = [{**c.to_dict(), **a.to_dict()} for c, a in results]
    return summarise(results), rows

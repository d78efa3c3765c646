"""Our Prometheus metrics beside Triton's own, on Triton's metrics port (/metrics, 8002 by default), through the
Python backend's custom-metrics API. Labelled by entry point; every instance of an entry point adds to the same
series.

    cosmos_generations_total{entry, outcome}        outcome: ok, invalid, blocked, cancelled, failed
    cosmos_generations_in_flight{entry}
    cosmos_guardrail_blocks_total{entry, guardrail}
    cosmos_denoise_step_seconds{entry}              one guided DiT evaluation, BLS included (histogram)
    cosmos_stage_seconds{entry, stage}              every stage call, BLS included (histogram)
    cosmos_generation_seconds{entry}                a whole successful request (histogram)
"""

from __future__ import annotations

import re
from typing import Any

import triton_python_backend_utils as pb_utils

from cosmos_triton.errors import Cancelled, GuardrailBlocked, RequestError, StageRefused

STEP_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
STAGE_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0]
GENERATION_BUCKETS = [1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0]
_BLOCKED = re.compile(r"GUARDRAIL BLOCKED: ([^:]+):")


def outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, Cancelled):
        return "cancelled"
    if isinstance(exc, GuardrailBlocked) or (isinstance(exc, StageRefused) and _BLOCKED.search(str(exc))):
        return "blocked"
    if isinstance(exc, (RequestError, StageRefused)):
        return "invalid"
    return "failed"


class EntryMetrics:
    def __init__(self, entry: str) -> None:
        self.entry = entry
        kind = pb_utils.MetricFamily
        self._families = {
            "total": kind("cosmos_generations_total", "Requests finished, by outcome", kind.COUNTER),
            "in_flight": kind("cosmos_generations_in_flight", "Generations being worked on", kind.GAUGE),
            "blocks": kind("cosmos_guardrail_blocks_total", "Requests a guardrail refused", kind.COUNTER),
            "step": kind("cosmos_denoise_step_seconds", "One guided DiT evaluation", kind.HISTOGRAM),
            "stage": kind("cosmos_stage_seconds", "One stage call from the entry point", kind.HISTOGRAM),
            "generation": kind("cosmos_generation_seconds", "A whole successful generation", kind.HISTOGRAM),
        }
        self._metrics: dict[tuple[str, ...], Any] = {}
        self.in_flight = self._families["in_flight"].Metric(labels={"entry": entry})
        self.step = self._families["step"].Metric(labels={"entry": entry}, buckets=STEP_BUCKETS)
        self.generation = self._families["generation"].Metric(labels={"entry": entry}, buckets=GENERATION_BUCKETS)

    def _labelled(self, family: str, buckets: list[float] | None = None, **labels: str) -> Any:
        key = (family, *(f"{k}={v}" for k, v in sorted(labels.items())))
        if key not in self._metrics:
            kwargs = {"buckets": buckets} if buckets else {}
            self._metrics[key] = self._families[family].Metric(labels={"entry": self.entry, **labels}, **kwargs)
        return self._metrics[key]

    def stage_done(self, stage: str, seconds: float) -> None:
        self._labelled("stage", STAGE_BUCKETS, stage=stage).observe(seconds)

    def finished(self, exc: BaseException | None, seconds: float) -> None:
        result = outcome(exc)
        self._labelled("total", outcome=result).increment(1)
        if result == "ok":
            self.generation.observe(seconds)
        elif result == "blocked":
            match = _BLOCKED.search(str(exc))
            self._labelled("blocks", guardrail=match.group(1) if match else "unknown").increment(1)

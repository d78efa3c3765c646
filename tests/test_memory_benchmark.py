"""`benchmarks/memory.py`: the --tiny run on CPU goes through every row and writes memory.json; the server table's
arithmetic on hand-made figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import memory as bench


def test_tiny_run_writes_every_row(tmp_path: Path) -> None:
    assert bench.main(["--tiny", "--strict", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "memory.json").read_text())
    rows = {r["row"]: r for r in data["rows"]}
    assert rows["cuda_context"]["skipped"] == "no CUDA"
    assert rows["h2d_bandwidth"]["h2d_pinned_gbps"] > 0
    assert {"decode/plain", "decode/chunked-1", "decode/chunked-1-attn1"} <= set(rows)
    assert rows["decode/chunked-1"]["bit_equal"] and rows["decode/chunked-1"]["uint8_max_abs"] == 0
    for name in ("dit/7B/blocks-first", "dit/7B/blocks-warm", "dit/7B/stage-offload", "t5/blocks",
                 "t5/stage-offload"):
        assert rows[name]["equal_resident"], name
    for name in ("dit/7B/compiled-blocks-first", "dit/7B/compiled-blocks-warm"):
        assert rows[name]["equal_resident"], name
    assert rows["dit/7B/compiled-blocks-warm"]["new_graphs_when_streamed"] == 0
    assert rows["dit/7B/stage-offload"]["resident_after_gb"] == 0
    assert rows["dit/7B/blocks-warm"]["resident_after_gb"] == 0
    settings = {(r["model"], r["setting"]) for r in data["table"]}
    assert ("7B", "+dit") in settings and ("14B", "all blocks, upsampler off") in settings
    assert all("peak_gb" in r for r in data["table"])


def figures() -> dict[str, bench.StageFigures]:
    return {
        "text_guardrail": bench.StageFigures(13.5, 0.5, streamed_engaged=1.0, streamed_activations=0.5, uploads=2,
                                             streamed_s=6.0),
        "prompt_upsampler": bench.StageFigures(24.5, 1.0),
        "t5_encoder": bench.StageFigures(19.5, 0.5, streamed_engaged=1.7, streamed_activations=0.5, streamed_s=1.0),
        "dit_step": bench.StageFigures(14.5, 8.0, streamed_engaged=1.2, streamed_activations=8.0, streamed_s=3.5),
        "tokenizer_decoder": bench.StageFigures(0.1, 4.0),
        "video_guardrail": bench.StageFigures(3.6, 1.5),
    }


def test_compose_sums_contexts_resident_weights_and_the_running_stage() -> None:
    f = figures()
    resident = bench.compose(f, 0.5, 25.0, {}, dit_step_s=8.0)
    weights = sum(x.weights for x in f.values())
    # the DiT phase: 6 contexts, every weight, the DiT's activations
    assert resident["phases_gb"]["dit_step"] == pytest.approx(6 * 0.5 + weights + 8.0, abs=0.05)
    assert resident["peak_phase"] == "dit_step" and resident["added_s_per_request"] == 0.0

    upsampler = bench.compose(f, 0.5, 25.0, {"prompt_upsampler": "stage"}, dit_step_s=8.0)
    assert upsampler["phases_gb"]["dit_step"] == pytest.approx(resident["phases_gb"]["dit_step"] - 24.5, abs=0.05)
    assert upsampler["upload_gb_per_request"] == 24.5
    assert upsampler["added_s_per_request"] == pytest.approx(24.5 / 25.0, abs=0.01)

    everything = {s: "stage" for s in bench.STAGES}
    full = bench.compose(f, 0.5, 25.0, everything, dit_step_s=8.0)
    assert full["peak_phase"] == "prompt_upsampler"
    assert full["phases_gb"]["dit_step"] == pytest.approx(3.0 + 14.5 + 8.0, abs=0.05)
    assert full["upload_gb_per_request"] == pytest.approx(13.5 * 2 + 24.5 + 19.5 + 14.5 + 0.1 + 3.6, abs=0.05)

    blocks = dict(everything, dit_step="blocks", t5_encoder="blocks", text_guardrail="blocks",
                  prompt_upsampler="off")
    low = bench.compose(f, 0.5, 25.0, blocks, dit_step_s=8.0)
    assert "prompt_upsampler" not in low["phases_gb"]
    assert low["phases_gb"]["dit_step"] == pytest.approx(5 * 0.5 + 1.2 + 8.0, abs=0.05)
    assert low["added_s_per_request"] == pytest.approx((0.1 + 3.6) / 25.0 + 6.0 + 1.0 + 3.5, abs=0.01)
    assert low["added_pct_of_dit_time"] == pytest.approx(100 * low["added_s_per_request"] / (35 * 8.0), abs=0.01)


def test_compose_names_missing_stages() -> None:
    f = figures()
    del f["t5_encoder"]
    assert bench.compose(f, 0.5, 25.0, {}, dit_step_s=None) == {"missing": ["t5_encoder"]}

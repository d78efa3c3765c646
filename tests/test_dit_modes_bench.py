"""benchmarks/dit_modes.py end to end on CPU with a tiny DiT: every row it can run here, the JSON it leaves, and
the budget skipping that keeps a GPU call within its time."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "dit_modes.py"


def run(tmp_path: Path, *extra: str) -> dict:
    subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--out", str(tmp_path),
                    "--compile-backend", "aot_eager", *extra], cwd=ROOT, check=True, capture_output=True,
                   text=True, timeout=600)
    return json.loads((tmp_path / "dit_modes.json").read_text())


def test_tiny_run_writes_every_row(tmp_path):
    result = run(tmp_path, "--budget-s", "600")
    rows = {r["name"]: r for r in result["rows"]}
    assert "error" not in str(result["rows"])
    assert set(rows) >= {"exact_eager", "alternative", "exact_compile", "fp8_compile"}
    assert rows["exact_eager"]["rel_l2"] == 0.0 and rows["exact_eager"]["forward_s"] > 0
    assert rows["exact_compile"]["rel_l2"] == 0.0  # aot_eager runs the eager kernels: same bits
    assert rows["exact_compile"]["dynamo"]["graph_breaks"] == 0
    assert rows["exact_compile"]["dynamo"]["unique_graphs"] == 1
    assert 0 < rows["alternative"]["rel_l2"] < 0.05  # diffusers' own numerics: close, not equal
    assert 0 < rows["fp8_compile"]["rel_l2"] < 0.15
    cache = {r["name"]: r for r in result["cache"]}
    assert set(cache) == {"cache_off", "cache_teacache_0.3", "cache_teacache_0.4"}
    assert all(r["evaluations"] == 8 for r in cache.values())
    assert cache["cache_off"]["skipped"] == 0
    assert cache["cache_teacache_0.4"]["skipped"] >= cache["cache_teacache_0.3"]["skipped"]
    assert "final" in cache["cache_teacache_0.4"] and "step_x0" in cache["cache_teacache_0.4"]
    skipped = {s["name"] for s in result["skipped"]}
    assert {"exact_fa3", "fp8_torchao"} <= skipped  # reported, not silently missing
    assert result["config"]["tokens"] == 16 * 8 * 12 and result["env"]["torch"]


def test_budget_skips_rows_but_keeps_the_reference(tmp_path):
    result = run(tmp_path, "--budget-s", "0")
    assert [r["name"] for r in result["rows"]] == ["exact_eager"]
    reasons = {s["name"]: s["reason"] for s in result["skipped"]}
    assert "budget" in reasons["alternative"] and "budget" in reasons["exact_compile"]

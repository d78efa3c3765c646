"""benchmarks/parallel_scaling.py end to end on CPU: torchrun with 2 processes over gloo, the tiny DiT; every row
present and, on CPU, each parallel x0 bit-identical to the single-process one."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_tiny_run_on_two_processes(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    str(ROOT / "benchmarks" / "parallel_scaling.py"), "--tiny", "--iters", "1", "--out", str(tmp_path)],
                   cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=300)
    result = json.loads((tmp_path / "parallel_scaling_2gpu.json").read_text())
    assert [r["name"] for r in result["rows"]] == ["single", "context2", "cfg2xcontext1"]
    assert result["config"] | {"backend": "gloo", "world": 2, "tokens": 3 * 4 * 6} == result["config"]
    for row in result["rows"]:
        assert row["guided_s"] > 0 and row["max_abs"] == 0 and row["rel_l2"] == 0, row

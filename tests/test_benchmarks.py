"""The benchmark scripts run as documented and end with their JSON line (figures unchecked:
timings belong to the scripts, not to tests)."""

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def last_json_line(script: str, *args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # light on a shared CI machine
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_train_speed_reports_ms_per_update_and_reference():
    out = last_json_line("train_speed.py", "--steps", "30", "--repeats", "1",
                         "--reference-steps", "10", "--seeds", "2")
    assert out["ms_per_update"] > 0 and out["reference_ms_per_update"] > 0
    assert out["speedup_vs_reference"] == round(
        out["reference_ms_per_update"] / out["ms_per_update"], 2)
    assert set(out["batched_seeds_ms"]) == {"2"}


def test_time_breakdown_reports_kinds_and_the_attention_free_bound():
    out = last_json_line("time_breakdown.py", "--repeats", "1", "--reference-steps", "10")
    assert out["ms_per_update"] == round(out["train_ms"] + out["eval_ms_amortised"], 2)
    assert {"matmul", "attention products"} <= set(out["profile_ms"])
    assert out["without_attention_ms_per_update"] > 0

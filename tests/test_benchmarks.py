"""The benchmark scripts run as documented and end with their JSON line (figures unchecked:
timings belong to the scripts, not to tests)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))


def last_json_line(script: str, *args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # light on a shared CI machine
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def small_pipeline(path: Path) -> Path:
    """params.yaml with one task and the first value of every study."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["tasks"] = ["x_plus_y"]
    for name, spec in params["studies"].items():
        if name != "linear_teacher":
            for key, value in spec.items():
                if isinstance(value, list):
                    spec[key] = value[:1]
    path.write_text(yaml.safe_dump(params))
    return path


def test_train_speed_reports_every_figure(tmp_path):
    out = last_json_line("train_speed.py", "--device", "cpu", "--steps", "10", "--repeats", "1",
                         "--reference-steps", "10", "--seeds", "1", "2", "--startup-runs", "1",
                         "--params", str(small_pipeline(tmp_path / "params.yaml")),
                         "--pipeline-steps", "10")
    assert set(out["ms_per_update"]) == {"1", "2"} and min(out["ms_per_update"].values()) > 0
    assert out["speedup_vs_reference"] == round(
        out["reference_ms_per_update"] / out["ms_per_update"]["1"], 2)
    assert out["cell_s"] > 0 and out["cell_s_measured"] is False
    assert len(out["startup_runs_s"]) == 1 and out["startup_s"] > 0
    # train@x_plus_y and the first cell of each of the 8 studies; one start-up per stage
    assert out["pipeline_cells"] == 9 == len(out["pipeline_cell_s"])
    assert out["pipeline_stages"] == 9 + 9
    assert out["pipeline_estimate_s"] == round(
        out["pipeline_train_s"] + out["pipeline_startup_s"], 1)
    assert abs(out["pipeline_startup_s"] - 18 * out["startup_s"]) <= 18 * 0.005 + 0.05


def test_pipeline_cells_are_every_training_stage_of_the_default_params():
    from train_speed import pipeline_cells

    from groklab.params import load_params

    params = load_params(ROOT / "params.yaml")
    cells = pipeline_cells(params)
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    expected = len(params["tasks"])  # train@<task>
    for name, stage in stages.items():
        if name in ("train", "generate") or "matrix" not in stage:
            continue
        sizes = [len(_resolve(params, ref)) for ref in stage["matrix"].values()]
        expected += sizes[0] * sizes[1]
    assert len(cells) == expected == 80
    names = [name for name, _ in cells]
    assert len(set(names)) == len(names) and "concealment@parity-28" in names
    conceal = dict(cells)["concealment@parity-28"]
    assert (conceal.train.steps, conceal.train.batch_size, conceal.model.arch) == (
        40000, 32, "bit_mlp")


def _resolve(params: dict, ref: str) -> list:
    """A dvc.yaml matrix reference such as ``${studies.augmentation.augs}``."""
    node = params
    for key in ref.strip("${}").split("."):
        node = node[key]
    return node


def test_steps_to_99_compares_against_given_figures():
    out = last_json_line("steps_to_99.py", "--device", "cpu", "--fast-only", "--tasks",
                         "x_plus_y", "--seeds", "0", "1", "--steps", "20",
                         "--against", "x_plus_y=10,20")
    assert out["x_plus_y"]["batched_fast"] == [20, 20]  # censored at the 20-update budget
    assert out["x_plus_y"]["pass"] is False  # no seed reached 99%


def test_determinism_reports_identical_histories_on_the_cpu():
    out = last_json_line("determinism.py", "--device", "cpu", "--steps", "20", "--seeds", "0")
    assert out["identical"] is True and out["max_difference_twice"] == 0.0


def test_time_breakdown_reports_kinds_and_the_attention_free_bound():
    out = last_json_line("time_breakdown.py", "--repeats", "1", "--reference-steps", "10")
    assert out["ms_per_update"] == round(out["train_ms"] + out["eval_ms_amortised"], 2)
    assert {"matmul", "attention products"} <= set(out["profile_ms"])
    assert out["without_attention_ms_per_update"] > 0

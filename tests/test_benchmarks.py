"""The benchmark scripts run as documented and end with their JSON line (figures unchecked:
timings belong to the scripts, not to tests)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def last_json_line(script: str, *args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # light on a shared CI machine
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# Studies of the small pipeline the benchmark estimates: a network study beside the base run,
# another architecture (the parity MLP) and the linear model, which imports no torch. Each
# distinct cell shape is timed (about 5 s each), so not every study: the cells and stage
# kinds of all of them are test_pipeline_cells_are_every_training_stage_of_the_default_params'.
SMALL_STUDIES = ("augmentation", "concealment", "linear_teacher")


def small_pipeline(path: Path) -> Path:
    """params.yaml with one base task and the first task and value of :data:`SMALL_STUDIES`."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["tasks"] = ["x_plus_y"]
    params["baseline"]["tasks"] = ["x_plus_y"]
    params["studies"] = {k: v for k, v in params["studies"].items() if k in SMALL_STUDIES}
    for spec in params["studies"].values():
        spec["tasks"], spec["values"] = spec["tasks"][:1], spec["values"][:1]
        spec["value_settings"] = {v: s for v, s in spec["value_settings"].items()
                                  if v in spec["values"]}
    path.write_text(yaml.safe_dump(params))
    return path


def test_train_speed_reports_every_figure(tmp_path):
    small = small_pipeline(tmp_path / "params.yaml")
    params = yaml.safe_load(small.read_text())  # a smaller one: the augmentation study only
    for study in set(params["studies"]) - {"augmentation"}:
        del params["studies"][study]
    smaller = tmp_path / "smaller.yaml"
    smaller.write_text(yaml.safe_dump(params))
    out = last_json_line("train_speed.py", "--device", "cpu", "--steps", "10", "--repeats", "1",
                         "--reference-steps", "10", "--seeds", "1", "2", "--startup-runs", "1",
                         "--params", str(small), "--pipeline-steps", "10",
                         "--also-estimate", str(smaller))
    assert set(out["ms_per_update"]) == {"1", "2"} and min(out["ms_per_update"].values()) > 0
    assert out["matmul_precision"] == "highest"  # the params file's, as the figures ran
    assert out["speedup_vs_reference"] == pytest.approx(
        out["reference_ms_per_update"] / out["ms_per_update"]["1"], rel=0.01)
    assert out["cell_s"] > 0 and out["cell_s_measured"] is False
    assert len(out["startup_runs_s"]) == 1 and out["startup_s"] > 0
    other = out["startup_other_s"]
    assert set(other) == {"generate", "light", "evaluate", "report"} and min(other.values()) > 0
    # baseline@x_plus_y and the first cell of each study; one start-up per stage: the
    # network cells train, the linear cell and experiment@x_plus_y (at the paper defaults
    # it trains nothing) import no torch, then generate@x_plus_y, evaluate and report
    n_studies = len(yaml.safe_load(small.read_text())["studies"])
    assert out["pipeline_cells"] == 1 + n_studies == len(out["pipeline_cell_s"])
    trained = n_studies  # baseline and every study's first cell but the linear one
    kinds = {"train": trained, "light": 2, "generate": 1, "evaluate": 1, "report": 1}
    assert out["pipeline_stage_kinds"] == kinds and out["pipeline_stages"] == trained + 5
    assert out["pipeline_estimate_s"] == pytest.approx(
        out["pipeline_train_s"] + out["pipeline_startup_s"], abs=0.11)
    charged = trained * out["startup_s"] + sum(kinds[k] * t for k, t in other.items())
    assert abs(out["pipeline_startup_s"] - charged) <= (trained + 5) * 0.005 + 0.05  # rounded
    # the smaller pipeline: its cells' figures are the same timings, its stages its own
    also = out["estimates"][str(smaller)]
    assert also["pipeline_cell_s"] == {name: out["pipeline_cell_s"][name] for name in
                                       ("baseline@x_plus_y", "augmentation@x_plus_y-reversal")}
    assert also["pipeline_stage_kinds"] == {"train": 2, "light": 1, "generate": 1,
                                            "evaluate": 1, "report": 1}


def test_pipeline_cells_are_every_training_stage_of_the_default_params():
    from train_speed import pipeline_cells, stage_kinds

    from groklab.params import load_params

    params = load_params(ROOT / "params.yaml")
    cells = pipeline_cells(params)
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    expected = len(params["baseline"]["tasks"])  # baseline@<task>; experiment@ trains nothing
    for name, stage in stages.items():
        if name in params["studies"]:
            sizes = [len(_resolve(params, ref)) for ref in stage["matrix"].values()]
            expected += sizes[0] * sizes[1]
    assert len(cells) == expected == 82  # 74 + the mechanism cell + 7 accelerator cells
    names = [name for name, _ in cells]
    assert len(set(names)) == len(names) and "concealment@parity-28" in names
    conceal = dict(cells)["concealment@parity-28"]
    assert (conceal.train.steps, conceal.train.batch_size, conceal.model.arch) == (
        40000, 32, "bit_mlp")
    # 7 of the cells are the linear teacher's (values of lam); the 4 experiment@ stages are
    # at the paper defaults: those 11 import no torch, every other cell trains
    linear = len(params["studies"]["linear_teacher"]["values"])
    assert stage_kinds(params) == {"train": 82 - linear, "generate": 4, "light": linear + 4,
                                   "evaluate": 1, "report": 1} and linear == 7


def _resolve(params: dict, ref: str) -> list:
    """A dvc.yaml matrix reference such as ``${studies.augmentation.values}``."""
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
    # each figure is rounded on its own: the sum of rounded parts may differ in the last digit
    assert out["ms_per_update"] == pytest.approx(out["train_ms"] + out["eval_ms_amortised"],
                                                 abs=0.011)
    assert {"matmul", "attention products"} <= set(out["profile_ms"])
    assert out["without_attention_ms_per_update"] > 0


def test_reference_protocol_crossing_against_hand_cases():
    import numpy as np
    from against_published import first_crossing, reference_crossing

    rng = np.random.default_rng(1)
    steps = np.arange(0, 110, 10)
    jump = np.where(steps >= 60, 1.0, 0.0)  # a perfect score from update 60 on
    assert first_crossing(steps, jump, 100) == 60
    assert reference_crossing(steps, jump, 100, rng, 50) == 60.0
    flat = np.full(steps.size, 0.98)  # 4096 draws at 98% pass 99% with p ~ 1e-6 (z = 4.7)
    assert reference_crossing(steps, flat, 100, rng, 50) == 100.0
    assert first_crossing(steps, flat, 100) == 100  # censored at the budget


def test_against_published_runs_and_prints_its_figures():
    out = last_json_line("against_published.py", "--device", "cpu", "--tasks", "x_minus_y",
                         "--seeds", "0", "1", "--steps", "20", "--draws", "5")
    row = out["x_minus_y"]
    assert row["published"] == [4910, 4350, 4900]  # references/augmentation_paper_runs.json
    assert row["ours"] == [20, 20]  # censored at the 20-update budget
    assert len(row["reference_protocol"]) == 2 and 0 <= row["mannwhitney_p"] <= 1


def test_gpu_profile_ranks_kernels_by_growth_and_sums_per_update():
    """gpu_profile's arithmetic on hand-made profiles (the profiling itself needs CUDA)."""
    from gpu_profile import growth, summarise

    few = {"gemm": [1.0, 1.0], "copy": [5.0], "sort": [2.0]}
    many = {"gemm": [4.0, 4.0], "copy": [5.0], "norm": [3.0]}
    assert growth(few, many, updates=2, top=3) == [("gemm", 1.0, 4.0), ("norm", 0.0, 1.5),
                                                   ("copy", 2.5, 2.5)]
    table = summarise(many, updates=2, top=2)
    assert table["kernels_per_update"] == 2.0 and table["kernel_us_per_update"] == 8.0
    assert table["top"] == [["gemm", 4.0], ["copy", 2.5]]


def test_measures_cost_times_both_runs_and_both_parts():
    """At a tiny size: both runs timed, and the per-update share is the arithmetic of the
    two timed parts at the cadence (measure / (N · eval_every · update))."""
    out = last_json_line("measures_cost.py", "--p", "11", "--width", "16", "--batch-size",
                         "32", "--steps", "20", "--eval-every", "5", "--measures-every", "2",
                         "--repeats", "1", "--threads", "1")
    assert out["run_without_s"] > 0 and out["run_with_s"] > 0
    assert out["measure_per_update"] == pytest.approx(
        out["measure_s"] / (2 * 5 * out["update_s"]))


def test_fleet_speed_reports_both_ways_of_training(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["p"] = 23  # the real cells on a smaller table
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = last_json_line("fleet_speed.py", "--steps", "2", "--params",
                         str(tmp_path / "params.yaml"), "--cells", "baseline@x_plus_y",
                         "augmentation@x_plus_y-negation")
    assert out["cells"] == 2 and out["steps"] == 2 and out["device"] == "cpu"
    assert out["speedup"] == pytest.approx(out["alone_s"] / out["fleet_s"], rel=0.05)
    assert 1 <= out["passes_per_update"] <= 2
    assert out["identical_to_alone"] == 2  # on a CPU, as tests/test_fleet.py finds

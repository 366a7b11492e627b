"""Stage entry points as DVC runs them: real processes, real files, a real MLflow server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow_api import api, runs_of, tags_of

from groklab.params import load_params

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TINY = {"seeds": [0, 1], "data": {"p": 11, "train_fraction": 0.5, "encoding": "full"},
        "model": {"width": 32, "heads": 2},
        "train": {"steps": 30, "batch_size": 32, "eval_every": 10, "measures_every": 2}}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    params = load_params(ROOT / "params.yaml")
    for key, value in TINY.items():
        params[key] = {**params[key], **value} if isinstance(value, dict) else value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path


def stage(workdir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    return subprocess.run([sys.executable, "-m", *args], cwd=workdir, capture_output=True,
                          text=True, timeout=300, env={**base, "DVC_ROOT": str(workdir), **env})


def test_train_stage_logs_runs_seeds_curves_tags_and_artifacts(workdir, mlflow_server):
    assert stage(workdir, "groklab.stages.generate", "x_plus_y").returncode == 0
    proc = stage(workdir, "groklab.stages.train", "augmentation", "x_plus_y", "combined30",
                 MLFLOW_TRACKING_URI=mlflow_server, DVC_EXP_NAME="e1")
    assert proc.returncode == 0, proc.stderr
    runs = runs_of(mlflow_server, "augmentation")
    parent = next(r for r in runs if "mlflow.parentRunId" not in tags_of(r))
    tags = tags_of(parent)
    assert tags["dvc.stage"] == "augmentation@x_plus_y-combined30"
    assert tags["dvc.exp_name"] == "e1" and tags["variant"] == "combined30"
    assert parent["info"]["run_name"] == "x_plus_y · combined30 · e1"  # the experiment's
    import torch  # the machine it ran on, in the tags (and summary.json), not in config.json

    assert tags["machine.torch"] == torch.__version__ and tags["machine.device"] == "cpu"
    from groklab.cpu import thread_count  # GROKLAB_THREADS, else the cores: the stage's

    assert tags["machine.threads"] == str(thread_count())
    summary = json.loads((workdir / "models/augmentation/x_plus_y-combined30/summary.json")
                         .read_text())
    assert summary["machine"]["torch"] == torch.__version__ and summary["machine"]["cpu"]
    config = (workdir / "models/augmentation/x_plus_y-combined30/config.json").read_text()
    assert "machine" not in config and torch.__version__ not in config
    assert parent["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in parent["data"]["params"]}
    assert params["data.p"] == "11" and params["train.aug.name"] == "combined30"
    children = [r for r in runs if tags_of(r).get("mlflow.parentRunId") == parent["info"]["run_id"]]
    assert sorted(tags_of(c)["seed"] for c in children) == ["0", "1"]
    history = api(mlflow_server, "metrics/get-history", run_id=children[0]["info"]["run_id"],
                  metric_key="val_acc")["metrics"]
    assert sorted(m["step"] for m in history) == [0, 10, 20, 30]
    restricted = api(mlflow_server, "metrics/get-history", run_id=children[0]["info"]["run_id"],
                     metric_key="measures/restricted_loss")["metrics"]
    assert sorted(m["step"] for m in restricted) == [0, 20, 30]  # every 2nd evaluation, last
    measures = pd.read_csv(workdir / "models/augmentation/x_plus_y-combined30/measures.csv")
    assert measures.step.tolist() == [0, 20, 30] * 2
    by_step = {m["step"]: m["value"] for m in restricted}
    mine = measures[measures.seed == int(tags_of(children[0])["seed"])]
    assert [by_step[s] for s in mine.step] == pytest.approx(mine.restricted_loss.tolist())
    reached = {m["key"]: m["value"] for m in children[0]["data"]["metrics"]}
    assert 0.5 < reached["val_reachable"] < 1
    files = {f["path"] for f in api(mlflow_server, "artifacts/list",
                                    run_id=parent["info"]["run_id"])["files"]}
    assert {"history.csv", "summary.json", "config.json", "measures.csv"} <= files
    seed_files = {f["path"] for f in api(mlflow_server, "artifacts/list",
                                         run_id=children[0]["info"]["run_id"])["files"]}
    assert any(f.startswith("seed") and f.endswith(".pt") for f in seed_files)


def test_unreachable_tracking_keeps_outputs_and_says_so(workdir, unused_port):
    proc = stage(workdir, "groklab.stages.train", "baseline", "x_div_y",
                 MLFLOW_TRACKING_URI=f"http://127.0.0.1:{unused_port}")
    assert proc.returncode == 0, proc.stderr
    assert "tracking skipped" in proc.stderr and str(unused_port) in proc.stderr
    summary = json.loads((workdir / "models/baseline/x_div_y/summary.json").read_text())
    assert [s["seed"] for s in summary["seeds"]] == [0, 1]


def test_failed_run_leaves_finished_results_untouched(workdir, unused_port):
    env = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{unused_port}"}
    assert stage(workdir, "groklab.stages.train", "baseline", "x_plus_y", **env).returncode == 0
    before = (workdir / "models/baseline/x_plus_y/history.csv").read_bytes()
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["optimizers"]["adamw"]["lr"] = 1e12  # diverges at once
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    proc = stage(workdir, "groklab.stages.train", "baseline", "x_plus_y", **env)
    assert proc.returncode == 1
    assert "groklab: error: loss became NaN/inf" in proc.stderr and "Traceback" not in proc.stderr
    assert (workdir / "models/baseline/x_plus_y/history.csv").read_bytes() == before


@pytest.mark.parametrize("module, args", [
    ("groklab.stages.generate", ["x_plus_y"]),
    ("groklab.stages.train", ["baseline", "x_plus_y"]),
    ("groklab.stages.evaluate", []),
])
def test_bad_params_fail_before_any_stage_computes(workdir, module, args):
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["aug"], params["seeds"] = "rotation", [-1]
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    proc = stage(workdir, module, *args)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert "groklab: error: params.yaml: seeds = [-1]: must be a non-empty list" in lines[0]
    assert any("aug = 'rotation': not in `augmentations`" in line for line in lines), lines
    assert not (workdir / "data").exists() and not (workdir / "models").exists()


def test_malformed_params_is_one_line(workdir):
    (workdir / "params.yaml").write_text("seeds: [0, 1\ntasks: []\n")
    proc = stage(workdir, "groklab.stages.train", "baseline", "x_plus_y")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "not valid YAML (line" in proc.stderr


def test_a_cell_params_does_not_declare_is_refused(workdir):
    proc = stage(workdir, "groklab.stages.train", "augmentation", "x_plus_y", "mirror")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "'mirror' is not one of studies.augmentation.values" in proc.stderr


def test_experiment_at_paper_defaults_reads_the_base_run_and_trains_nothing(workdir):
    proc = stage(workdir, "groklab.stages.train", "experiment", "x_plus_y",
                 GROKLAB_TRACKING="off")
    assert proc.returncode == 0, proc.stderr
    out = workdir / "models/experiment/x_plus_y"
    assert sorted(p.name for p in out.iterdir()) == [".groklab", "source.json"]
    assert json.loads((out / "source.json").read_text())["stage"] == "baseline@x_plus_y"
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["aug"] = "negation"
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    assert stage(workdir, "groklab.stages.train", "experiment", "x_plus_y",
                 GROKLAB_TRACKING="off").returncode == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["train"]["aug"] == {"name": "negation", "p_reverse": 0.0, "p_negate": 0.3}
    assert not (out / "source.json").exists()


def test_linear_teacher_cell_stage_writes_every_seeds_curves(workdir):
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["studies"]["linear_teacher"]["settings"].update(d_in=50, steps=20_000, n_points=60)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    proc = stage(workdir, "groklab.stages.train", "linear_teacher", "linear_regression", "0.8",
                 GROKLAB_TRACKING="off")
    assert proc.returncode == 0, proc.stderr
    out = workdir / "models/linear_teacher/linear_regression-0.8"
    history = pd.read_csv(out / "history.csv")
    assert sorted(history.seed.unique()) == [0, 1]
    assert history.groupby("seed").size().tolist() == [len(history) // 2] * 2
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "linear_teacher" and config["config"]["lam"] == 0.8
    assert config["config"]["d_in"] == 50 and config["seeds"] == [0, 1]
    assert not list(out.glob("*.pt"))

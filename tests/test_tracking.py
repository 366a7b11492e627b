"""MLflow tracking against a real server (checked through its REST API) and a real SQLite store."""

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow_api import api, runs_of, tags_of

from groklab.tracking import StageTracker, flatten, repo_root, run_tags, tracking_uri

STEPS = 1500


def params_of(run: dict) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def history_of(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    points, token = [], None
    while True:
        query = {"run_id": run_id, "metric_key": key} | ({"page_token": token} if token else {})
        page = api(uri, "metrics/get-history", **query)
        points += [(int(m.get("step", 0)), m["value"]) for m in page.get("metrics", [])]
        if not (token := page.get("next_page_token")):
            return sorted(points)


def log_batch_requests(server_dir: Path) -> int:
    return (server_dir / "server.log").read_text().count("/api/2.0/mlflow/runs/log-batch")


def seed_history(seed: int) -> pd.DataFrame:
    step = np.arange(STEPS)
    val = np.where(step % 2 == 0, step / (2 * STEPS), np.nan)  # evaluated every other step
    return pd.DataFrame({"step": step, "seed": seed, "train_acc": step / STEPS + seed,
                         "val_acc": val, "train_loss": 1.0 / (step + 1), "phase": "fit"})


@pytest.mark.slow
def test_stage_run_with_seeds_history_and_artifacts(mlflow_server, mlflow_server_dir, tmp_path,
                                                    monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("DVC_EXP_NAME", "brisk-lamb")
    tags = run_tags(stage="train@x_plus_y", study="augmentation", task="x_plus_y",
                    variant="reversal")
    params = {"data": {"p": 97, "train_fraction": 0.5}, "seeds": [0, 1], "stop_after_grok": None}
    (tmp_path / "final.csv").write_text("seed,val_acc\n0,1.0\n1,0.98\n")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "curve.json").write_text("{}")
    before = log_batch_requests(mlflow_server_dir)

    with StageTracker("study-augmentation", "train@x_plus_y", tags=tags, params=params,
                      root=tmp_path) as tracker:
        assert tracker.enabled and tracker.skipped_reason == ""
        for seed in (0, 1):
            with tracker.seed_run(seed, params={"lr": 0.001}) as run:
                run.log_history(seed_history(seed))
        tracker.log_metrics({"val_acc_mean": 0.99, "nan": float("nan"), "name": "x"}, step=7)
        tracker.log_artifacts([tmp_path / "final.csv", tmp_path / "plots"])

    assert capsys.readouterr().out == ""  # the CLI's JSON owns stdout
    runs = runs_of(mlflow_server, "study-augmentation")
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in tags_of(r)]
    children = {r["info"]["run_name"]: r for r in runs if r is not parent}
    assert parent["info"]["run_id"] == tracker.run_id
    assert parent["info"]["status"] == "FINISHED"
    assert parent["info"]["run_name"] == "train@x_plus_y"
    assert tags_of(parent).items() >= {"dvc.stage": "train@x_plus_y", "dvc.exp_name": "brisk-lamb",
                                       "study": "augmentation", "task": "x_plus_y",
                                       "variant": "reversal"}.items()
    assert params_of(parent) == {"data.p": "97", "data.train_fraction": "0.5",
                                 "seeds": "[0, 1]", "stop_after_grok": "null"}
    assert {m["key"]: (m["value"], int(m["step"])) for m in parent["data"]["metrics"]} == {
        "val_acc_mean": (0.99, 7)}

    assert sorted(children) == ["seed 0", "seed 1"]
    for seed in (0, 1):
        child = children[f"seed {seed}"]
        assert child["info"]["status"] == "FINISHED"
        assert tags_of(child)["mlflow.parentRunId"] == tracker.run_id
        assert tags_of(child)["study"] == "augmentation"
        assert params_of(child) == {"seed": str(seed), "lr": "0.001"}
        assert {m["key"] for m in child["data"]["metrics"]} == {"train_acc", "val_acc",
                                                                "train_loss"}
        train_acc = history_of(mlflow_server, child["info"]["run_id"], "train_acc")
        assert [s for s, _ in train_acc] == list(range(STEPS))
        np.testing.assert_allclose([v for _, v in train_acc], np.arange(STEPS) / STEPS + seed)
        val_acc = history_of(mlflow_server, child["info"]["run_id"], "val_acc")
        assert [s for s, _ in val_acc] == list(range(0, STEPS, 2))  # NaN steps skipped

    # Batched: per seed 3,750 points -> 4 requests + 1 for params; the parent 1 + 1.
    expected = 2 * (4 + 1) + 2
    deadline = time.monotonic() + 5
    while log_batch_requests(mlflow_server_dir) - before < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert log_batch_requests(mlflow_server_dir) - before == expected

    run_id = tracker.run_id
    top = api(mlflow_server, "artifacts/list", run_id=run_id)["files"]
    assert {(f["path"], f["is_dir"]) for f in top} == {("final.csv", False), ("plots", True)}
    sub = api(mlflow_server, "artifacts/list", run_id=run_id, path="plots")["files"]
    assert [f["path"] for f in sub] == ["plots/curve.json"]


@pytest.mark.slow
def test_failing_stage_ends_failed_and_reraises(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    tags = run_tags(stage="train@x_div_y", study="failing")
    with pytest.raises(RuntimeError, match="diverged"), \
            StageTracker("study-failing", "train@x_div_y", tags=tags, root=tmp_path) as tracker, \
            tracker.seed_run(0):
        raise RuntimeError("diverged")
    statuses = {r["info"]["run_name"]: r["info"]["status"]
                for r in runs_of(mlflow_server, "study-failing")}
    assert statuses == {"train@x_div_y": "FAILED", "seed 0": "FAILED"}


def test_unreachable_server_is_skipped_fast_with_one_warning(unused_port, tmp_path, monkeypatch,
                                                             capsys):
    uri = f"http://127.0.0.1:{unused_port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    (tmp_path / "a.csv").write_text("x\n1\n")
    start = time.monotonic()
    with StageTracker("study-x", "train", tags={"study": "x"}, root=tmp_path) as tracker:
        assert time.monotonic() - start < 10
        with tracker.seed_run(0) as run:
            run.log_history(seed_history(0))
            run.log_metrics({"acc": 1.0}, step=1)
        tracker.log_artifacts([tmp_path / "a.csv"])
    assert not tracker.enabled and tracker.run_id is None
    assert "refused" in tracker.skipped_reason
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.strip().splitlines()
    assert uri in line and "tracking skipped" in line and "MLFLOW_TRACKING_URI" in line


def test_unwritable_default_store_is_skipped(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "not-a-dir"
    root.write_text("")  # mlflow.db cannot be created below a file
    with StageTracker("study-x", "train", root=root) as tracker:
        tracker.log_metrics({"acc": 1.0})
    assert not tracker.enabled
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"sqlite:///{root}/mlflow.db" in line and "tracking skipped" in line


def test_default_sqlite_store_keeps_artifacts_under_root(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "repo"
    assert tracking_uri(root) == f"sqlite:///{root}/mlflow.db"
    (tmp_path / "final.csv").write_text("seed,val_acc\n0,1.0\n")
    with StageTracker("study-default", "train@x_plus_y", params={"p": 97}, root=root) as tracker:
        tracker.log_artifacts([tmp_path / "final.csv"], artifact_path="results")
        with tracker.seed_run(0) as run:
            run.log_metrics({"val_acc": 1.0}, step=10)
        # A later failure (here a missing file) switches tracking off with one warning.
        tracker.log_artifacts([tmp_path / "missing.csv"])
        tracker.log_metrics({"val_acc": 1.0})
    assert tracker.run_id is not None and (root / "mlflow.db").is_file()
    found = list((root / "mlartifacts").rglob(f"{tracker.run_id}/artifacts/results/final.csv"))
    assert len(found) == 1 and found[0].read_text() == "seed,val_acc\n0,1.0\n"
    assert not tracker.enabled and "missing.csv" in tracker.skipped_reason
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


WORKER = """
import sys
import numpy as np, pandas as pd
from groklab.tracking import StageTracker
steps = np.arange(1000)
history = pd.DataFrame({"step": steps, "train_acc": steps / 1000, "val_acc": steps / 2000})
with StageTracker("study-concurrent", sys.argv[2], root=sys.argv[1]) as tracker:
    tracker.log_history(history)
print(tracker.enabled)
"""


@pytest.mark.slow
def test_concurrent_stages_share_a_fresh_sqlite_store(tmp_path, monkeypatch):
    # Unserialised, the second process to migrate a new mlflow.db failed with
    # "duplicate column name"; once it exists SQLite's busy timeout handles concurrent writers.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), f"stage-{i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [out.strip() for out, _ in results] == ["True", "True"], [e for _, e in results]
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("SELECT COUNT(*) FROM metrics").fetchone() == (2 * 2000,)
        assert db.execute("SELECT status FROM runs").fetchall() == [("FINISHED",)] * 2


def test_repo_root_maps_queued_experiment_copies_to_the_real_root(tmp_path, monkeypatch):
    proj = tmp_path / "proj"
    copy = proj / ".dvc" / "tmp" / "exps" / "tmpabc123"
    monkeypatch.setenv("DVC_ROOT", str(proj))
    assert repo_root() == proj
    monkeypatch.setenv("DVC_ROOT", str(copy))
    assert repo_root() == proj
    monkeypatch.delenv("DVC_ROOT")
    assert repo_root(copy / "src") == proj


def test_repo_root_falls_back_to_git_toplevel_then_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_ROOT", raising=False)
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    monkeypatch.chdir(repo / "sub")
    assert repo_root().resolve() == repo.resolve()
    plain = tmp_path / "plain"
    plain.mkdir()
    assert repo_root(plain) == plain


def test_run_tags(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not a git repository: no git.commit
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    assert run_tags(stage="summarize", study="s") == {"dvc.stage": "summarize", "study": "s"}
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "init"], check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    monkeypatch.setenv("DVC_EXP_NAME", "exp-1")
    assert run_tags(stage="train@x", study="s", task="x", variant=None) == {
        "dvc.stage": "train@x", "study": "s", "dvc.exp_name": "exp-1", "git.commit": head,
        "task": "x"}


def test_flatten():
    nested = {"data": {"p": 97, "encoding": "full", "extra": {}},
              "optimizer": {"betas": [0.9, 0.98], "nesterov": True, "batch_size": None},
              "seeds": [0, 1, 2], "train": {"curriculum": {"start": 0.2}}}
    assert flatten(nested) == {
        "data.p": "97", "data.encoding": "full", "data.extra": "{}",
        "optimizer.betas": "[0.9, 0.98]", "optimizer.nesterov": "true",
        "optimizer.batch_size": "null", "seeds": "[0, 1, 2]", "train.curriculum.start": "0.2"}
    assert flatten({"p": 5}, prefix="cfg") == {"cfg.p": "5"}
    assert flatten({}) == {}

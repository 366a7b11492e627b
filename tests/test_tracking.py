"""MLflow tracking against a real server (checked through its REST API) and a real SQLite store."""

import hashlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow_api import api, runs_of, tags_of

from groklab.config import ConfigError
from groklab.tracking import (
    StageTracker,
    check_tracking_env,
    flatten,
    record_interrupted,
    repo_root,
    run_tags,
    running_ui,
    stage_tracker,
    tracking_uri,
)

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


CARD = {"task": "x_plus_y", "n_equations": 121, "n_operands": 2, "n_classes": 11,
        "vocab_size": 13, "seq_len": 4, "digest": "ab" * 32,
        "splits": {"0": {"train": 60, "val": 61, "val_in_train": 0}},
        "val_reachable": {"reversal": {"0": 0.5, "1": 0.25}}}

WORKER = f"""
import sys
import numpy as np, pandas as pd
from groklab.tracking import stage_tracker
steps = np.arange(1000)
history = pd.DataFrame({{"step": steps, "train_acc": steps / 1000, "val_acc": steps / 2000}})
with stage_tracker("study-concurrent", "augmentation@x_plus_y-negation", task="x_plus_y",
                   variant="negation", root=sys.argv[1]) as tracker:
    tracker.log_history(history)
    tracker.log_dataset({CARD!r}, sys.argv[1] + "/data/x_plus_y/card.json")
    tracker.log_table(pd.DataFrame({{"seed": [0, 1], "steps_to_99": [10, 20]}}), "seeds")
print(tracker.enabled)
"""


@pytest.mark.slow
def test_two_workers_of_one_stage_share_a_fresh_sqlite_store(tmp_path, monkeypatch):
    # Two queue workers running the same stage (for two experiments) at once, on a store that
    # does not exist yet. Unserialised, the second process to migrate a new mlflow.db failed
    # with "duplicate column name"; both log the same dataset; neither may mark the other's
    # (running) run KILLED.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("GROKLAB_TRACKING", raising=False)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [out.strip() for out, _ in results] == ["True", "True"], [e for _, e in results]
    assert [err for _, err in results] == ["", ""]
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("SELECT COUNT(*) FROM metrics").fetchone() == (2 * 2000,)
        assert db.execute("SELECT status, name FROM runs").fetchall() == [
            ("FINISHED", "x_plus_y · negation")] * 2
        assert db.execute("SELECT name FROM datasets").fetchall() == [("x_plus_y",)]
        assert db.execute("SELECT COUNT(*) FROM inputs").fetchone() == (2,)


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


def run_of(uri: str, run_id: str) -> dict:
    return api(uri, "runs/get", run_id=run_id)["run"]


HOLDER = """
import contextlib, sys
from pathlib import Path
from groklab.tracking import stage_tracker
experiment, ready, *stages = sys.argv[1:]
with contextlib.ExitStack() as stack:
    trackers = [stack.enter_context(stage_tracker(experiment, s, task="x_plus_y", variant=s[-1]))
                for s in stages]
    stack.enter_context(trackers[0].seed_run(0))
    Path(ready).write_text("ready")
    sys.stdin.readline()  # hold the runs RUNNING until released (or killed)
"""


def hold_runs(tmp_path: Path, experiment: str, name: str, *stages: str) -> subprocess.Popen:
    """A real process holding RUNNING runs of ``stages`` (and a seed run of the first)."""
    ready = tmp_path / f"{name}.ready"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, experiment, str(ready), *stages],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the holder did not start its runs in 60 s"
        time.sleep(0.1)
    return proc


@pytest.mark.slow
def test_ghost_runs_of_the_stage_are_killed_and_live_ones_left_alone(mlflow_server, tmp_path,
                                                                     monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.chdir(tmp_path)
    exp, stage, other = "study-ghosts", "augmentation@x_plus_y-a", "augmentation@x_plus_y-b"
    live = hold_runs(tmp_path, exp, "live", stage)
    # A second worker of the same stage starts (its sweep leaves the live runs alone)...
    ghost = hold_runs(tmp_path, exp, "ghost", stage, other)
    ghost.send_signal(signal.SIGKILL)  # ... and is killed while its runs are open
    ghost.wait(timeout=10)  # reaped: its pid is gone
    before = {r["info"]["run_id"]: (tags_of(r)["groklab.pid"], r["info"]["status"])
              for r in runs_of(mlflow_server, exp)}
    assert sorted(pid for pid, _ in before.values()) == sorted(
        [str(ghost.pid)] * 3 + [str(live.pid)] * 2)
    assert {status for _, status in before.values()} == {"RUNNING"}

    with stage_tracker(exp, stage, task="x_plus_y", variant="a") as tracker:
        pass
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"groklab: marked 2 MLflow run(s) of {stage} KILLED")
    after = {r["info"]["run_id"]: r["info"]["status"] for r in runs_of(mlflow_server, exp)}
    ghost_ids = {i for i, (pid, _) in before.items() if pid == str(ghost.pid)}
    for run_id, (pid, _) in before.items():
        expected = ("RUNNING" if pid == str(live.pid)
                    or tags_of(run_of(mlflow_server, run_id))["dvc.stage"] == other
                    else "KILLED")
        assert after[run_id] == expected, (run_id, pid)
    assert sorted(tracker.ghosts) == sorted(
        i for i in ghost_ids if tags_of(run_of(mlflow_server, i))["dvc.stage"] == stage)
    assert after[tracker.run_id] == "FINISHED"

    live.communicate("go\n", timeout=60)
    assert live.returncode == 0
    with stage_tracker(exp, other, task="x_plus_y", variant="b"):  # the other stage's ghost
        pass
    assert "marked 1 MLflow run(s)" in capsys.readouterr().err
    final = {r["info"]["run_id"]: r["info"]["status"] for r in runs_of(mlflow_server, exp)}
    assert {final[i] for i in ghost_ids} == {"KILLED"}
    assert [s for i, s in final.items() if before.get(i, ("",))[0] == str(live.pid)] == [
        "FINISHED", "FINISHED"]


@pytest.mark.slow
def test_evaluate_marks_ghosts_of_every_stage(mlflow_server, tmp_path, monkeypatch, capsys):
    """A stage DVC restores from its run cache runs nothing, so its killed execution's run
    would stay RUNNING: `evaluate` marks the dead runs of every stage and experiment on
    this host, and leaves a live one alone."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.chdir(tmp_path)
    live = hold_runs(tmp_path, "study-restored-b", "live", "curriculum@x_plus_y-b")
    ghosts = [hold_runs(tmp_path, exp, f"ghost{i}", stage) for i, (exp, stage) in enumerate(
        [("study-restored-a", "augmentation@x_plus_y-a"),
         ("study-restored-b", "curriculum@x_plus_y-b")])]
    for ghost in ghosts:
        ghost.send_signal(signal.SIGKILL)
        ghost.wait(timeout=10)
    with stage_tracker("report", "evaluate"):
        pass
    marked = re.search(r"groklab: marked (\d+) MLflow run\(s\) of any stage KILLED",
                       capsys.readouterr().err)
    assert marked and int(marked[1]) >= 4  # two each; the session's server may hold others
    status = {tags_of(r)["groklab.pid"]: r["info"]["status"]
              for exp in ("study-restored-a", "study-restored-b")
              for r in runs_of(mlflow_server, exp)}
    assert status == {str(ghosts[0].pid): "KILLED", str(ghosts[1].pid): "KILLED",
                      str(live.pid): "RUNNING"}
    live.communicate("go\n", timeout=60)


def malformed(db: Path) -> None:
    """Garble every page of a real MLflow store but the first: "database disk image is
    malformed" (the first page, with the header, still reads as a database)."""
    data = bytearray(db.read_bytes())
    rng = np.random.default_rng(0)
    data[4096:] = rng.integers(0, 256, len(data) - 4096, dtype=np.uint8).tobytes()
    db.write_bytes(bytes(data))


def garbled_middle(db: Path) -> None:
    """8 KiB of garbage in the middle of a real MLflow store: pages MLflow's own queries at
    connect may never read, so only a check of the whole file finds them."""
    data = bytearray(db.read_bytes())
    middle = len(data) // 2 // 4096 * 4096
    data[middle:middle + 8192] = np.random.default_rng(2).integers(0, 256, 8192,
                                                                     np.uint8).tobytes()
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["garbage", "malformed", "middle"])
def test_corrupted_store_says_how_to_recover(damage, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    db = tmp_path / "mlflow.db"
    if damage == "garbage":
        db.write_bytes(np.random.default_rng(1).integers(0, 256, 20000, np.uint8).tobytes())
        phrase = "file is not a database"
    else:
        with stage_tracker("study-x", "train@x_plus_y", root=tmp_path) as tracker:
            assert tracker.enabled  # a real store, whose schema spans many pages
        capsys.readouterr()
        (malformed if damage == "malformed" else garbled_middle)(db)
        phrase = "database disk image is malformed"
    before = db.read_bytes()
    with stage_tracker("study-x", "train@x_plus_y", task="x_plus_y", root=tmp_path) as tracker:
        tracker.log_metrics({"acc": 1.0})
    assert not tracker.enabled and tracker.run_id is None
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"the MLflow store at {db} is corrupted ({phrase})" in line
    assert f"mv {db} {db}.corrupt" in line and "DVC outputs are intact" in line
    assert "unreachable" not in line and "writable" not in line
    assert db.read_bytes() == before  # the user's file is left as it was


@pytest.mark.slow
def test_experiment_kind_saved_view_and_run_names(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    # An experiment made before this version (no kind tag, no view) gets both; a kind
    # someone chose is left alone.
    old = api(mlflow_server, "experiments/create", {"name": "study-kind-old"})["experiment_id"]
    chosen = api(mlflow_server, "experiments/create", {
        "name": "study-kind-chosen",
        "tags": [{"key": "mlflow.experimentKind", "value": "genai_development"}]})
    with stage_tracker("study-kind-chosen", "x", root=tmp_path):
        pass
    tags = api(mlflow_server, "experiments/get", experiment_id=chosen["experiment_id"])
    assert {t["key"]: t["value"] for t in tags["experiment"]["tags"]}[
        "mlflow.experimentKind"] == "genai_development"
    for experiment in ("study-kind-new", "study-kind-old"):
        with stage_tracker(experiment, "augmentation@x_plus_y-combined30", task="x_plus_y",
                           variant="combined30", root=tmp_path) as tracker:
            tracker.log_metrics({"steps_to_99_mean": 1500.0})
        exp = api(mlflow_server, "experiments/get-by-name", experiment_name=experiment)
        tags = {t["key"]: t["value"] for t in exp["experiment"]["tags"]}
        assert tags["mlflow.experimentKind"] == "custom_model_development"
        view = json.loads(tags["mlflow.sharedViewState.groklab"])
        assert view["name"] == "groklab: headline metrics"
        state = json.loads(view["state"])
        assert state["selectedColumns"][:4] == [
            "metrics.`steps_to_99_mean`", "metrics.`clean_val_acc_mean`",
            "metrics.`final_val_acc_mean`", "metrics.`frac_groks`"]
        assert state["columnOrder"][1:5] == state["selectedColumns"][:4]
        (run,) = runs_of(mlflow_server, experiment)
        assert run["info"]["run_name"] == "x_plus_y · combined30"
        assert tags_of(run)["dvc.stage"] == "augmentation@x_plus_y-combined30"
        assert tags_of(run)["groklab.pid"] == str(os.getpid())
        assert tags_of(run)["groklab.host"] == socket.gethostname()
    assert exp["experiment"]["experiment_id"] == old
    # Reopening writes nothing new: the view's text is the same every time.
    with stage_tracker("study-kind-old", "x", root=tmp_path) as tracker:
        assert tracker.run_name == "x"
    again = api(mlflow_server, "experiments/get-by-name", experiment_name="study-kind-old")
    assert again["experiment"]["tags"] == exp["experiment"]["tags"]


@pytest.mark.slow
def test_dataset_card_input_and_table(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    seeds = pd.DataFrame({"seed": [0, 1, 2], "steps_to_99": [1200, 1500, np.nan],
                          "grokked": [True, True, False]})
    with stage_tracker("study-dataset", "augmentation@x_plus_y-reversal", task="x_plus_y",
                       variant="reversal", root=tmp_path) as tracker:
        tracker.log_dataset(CARD, tmp_path / "data" / "x_plus_y" / "card.json")
        tracker.log_table(seeds, "seeds")
    run = run_of(mlflow_server, tracker.run_id)
    (given,) = run["inputs"]["dataset_inputs"]
    dataset = given["dataset"]
    assert dataset["name"] == "x_plus_y"
    card_text = json.dumps(CARD, sort_keys=True)
    assert dataset["digest"] == hashlib.sha256(card_text.encode()).hexdigest()[:12]
    assert json.loads(dataset["source"]) == {"uri": "data/x_plus_y/card.json"}
    assert {t["key"]: t["value"] for t in given["tags"]} == {"mlflow.data.context": "train"}
    profile = json.loads(dataset["profile"])
    assert profile["n_equations"] == 121 and profile["val_reachable.reversal"] == 0.375
    assert profile["split.seed0"] == {"train": 60, "val": 61, "val_in_train": 0}
    assert [c["name"] for c in json.loads(dataset["schema"])["mlflow_colspec"]] == [
        "x1", "x2", "label"]

    url = f"{mlflow_server}/get-artifact?path=tables/seeds.json&run_uuid={tracker.run_id}"
    with urllib.request.urlopen(url, timeout=30) as resp:
        table = json.loads(resp.read())
    assert table["columns"] == ["seed", "steps_to_99", "grokked"]
    assert table["data"] == [[0, 1200.0, True], [1, 1500.0, True], [2, None, False]]
    logged = json.loads(tags_of(run)["mlflow.loggedArtifacts"])
    assert logged == [{"path": "tables/seeds.json", "type": "table"}]


def test_tracking_off_switch(tmp_path, monkeypatch, capsys):
    for value in ("", "on", "1", "TRUE"):
        monkeypatch.setenv("GROKLAB_TRACKING", value)
        assert check_tracking_env() is True
    for value in ("off", "0", "No"):
        monkeypatch.setenv("GROKLAB_TRACKING", value)
        assert check_tracking_env() is False
    monkeypatch.setenv("GROKLAB_TRACKING", "maybe")
    with pytest.raises(ConfigError, match="GROKLAB_TRACKING='maybe' is not allowed; use one of"):
        check_tracking_env()
    # Entered with the bad value, the tracker skips tracking instead (outputs are written).
    with stage_tracker("study-x", "train@x_plus_y", root=tmp_path) as tracker:
        tracker.log_metrics({"acc": 1.0})
    assert not tracker.enabled
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "GROKLAB_TRACKING='maybe' is not allowed" in line and "tracking skipped" in line


NO_MLFLOW = """
import importlib.abc, sys

class HideMlflow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError(f"No module named {name!r} (hidden)")
        return None

if sys.argv[1] == "hide":
    sys.meta_path.insert(0, HideMlflow())
"""

USE_TRACKER = """
import numpy as np, pandas as pd
from groklab.tracking import record_interrupted, stage_tracker
history = pd.DataFrame({"step": np.arange(10), "val_acc": np.linspace(0, 1, 10)})
with stage_tracker("study-x", "train@x_plus_y", task="x_plus_y", root=sys.argv[2]) as tracker:
    tracker.log_metrics({"steps_to_99_mean": 10.0})
    tracker.log_dataset({"task": "x_plus_y"}, "data/x_plus_y/card.json")
    tracker.log_table(history, "history")
    with tracker.seed_run(0) as run:
        run.log_history(history)
    tracker.log_artifacts([sys.argv[2]])
recorded = record_interrupted("study-x", "train@x_plus_y", step=5, root=sys.argv[2])
print(tracker.enabled, recorded, "mlflow" in sys.modules)
"""


@pytest.mark.parametrize("case", ["off", "mlflow missing"])
def test_no_tracking_imports_nothing_and_says_so_once(case, tmp_path):
    """A machine without MLflow (or with tracking off) runs the whole tracker interface as a
    no-op: one line on stderr, nothing written, MLflow never imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GROKLAB_"))}
    env["GROKLAB_TRACKING"] = "off" if case == "off" else "on"
    proc = subprocess.run([sys.executable, "-c", NO_MLFLOW + USE_TRACKER,
                           "show" if case == "off" else "hide", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False", "False"]
    lines = proc.stderr.strip().splitlines()
    if case == "off":
        # the tracker and record_interrupted each say it once
        assert lines == ["groklab: MLflow tracking is off (GROKLAB_TRACKING=off); DVC "
                         "outputs are written as usual."] * 2
    else:
        assert len(lines) == 2 and all(
            line.startswith("groklab: MLflow cannot be imported here (No module named "
                            "'mlflow' (hidden)); tracking skipped") for line in lines)
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no mlartifacts


@pytest.mark.slow
def test_record_interrupted_leaves_a_killed_run_with_the_update(mlflow_server, tmp_path,
                                                                monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    assert record_interrupted("study-interrupted", "augmentation@x_plus_y-negation", step=1234,
                              task="x_plus_y", variant="negation", params={"seeds": [0, 1]},
                              root=tmp_path)
    (run,) = runs_of(mlflow_server, "study-interrupted")
    assert run["info"]["status"] == "KILLED" and run["info"]["run_name"] == "x_plus_y · negation"
    assert tags_of(run)["groklab.interrupted_at_update"] == "1234"
    assert {m["key"]: m["value"] for m in run["data"]["metrics"]} == {
        "interrupted_at_update": 1234.0}
    assert {p["key"]: p["value"] for p in run["data"]["params"]} == {"seeds": "[0, 1]"}


HUNG = """
import socket, sys, time
from groklab.tracking import record_interrupted
start = time.monotonic()
ok = record_interrupted("study-x", "train@x_plus_y", step=7, timeout_s=1)
print(ok, round(time.monotonic() - start, 1))
"""


def test_record_interrupted_gives_up_on_a_hung_server(tmp_path):
    """A server that accepts connections and never answers: one line after the timeout, and
    the interrupted stage still exits at once."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)  # connections complete in the backlog; nothing ever answers
        uri = f"http://127.0.0.1:{hung.getsockname()[1]}"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        env.pop("GROKLAB_TRACKING", None)
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", HUNG], capture_output=True, text=True,
                              timeout=60, env=env, cwd=tmp_path)
        elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    ok, waited = proc.stdout.split()
    assert ok == "False" and 1.0 <= float(waited) < 2.0
    assert proc.stderr.strip() == (f"groklab: MLflow at {uri} did not answer within 1 s; the "
                                   "interruption of train@x_plus_y was not recorded.")
    assert elapsed < 15  # the process did not wait for its daemon thread


@pytest.mark.slow
def test_links_to_each_experiments_runs_table(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GROKLAB_"))}
    env["DVC_ROOT"] = str(tmp_path)
    links = [sys.executable, "-m", "groklab.tracking", "--ui", "http://127.0.0.1:5001/"]
    missing = subprocess.run(links, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip() == (f"groklab: no MLflow store at sqlite:///{tmp_path}/"
                                      "mlflow.db yet; run a stage first")
    for experiment in ("report", "augmentation"):
        with stage_tracker(experiment, "s", root=tmp_path):
            pass
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        ids = dict(db.execute("SELECT name, experiment_id FROM experiments"))
    out = subprocess.run(links, capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    query = "runs?workflowType=machine_learning&viewStateShareKey=groklab"
    assert out.stdout.splitlines() == [
        f"{name}: http://127.0.0.1:5001/#/experiments/{ids[name]}/{query}"
        for name in ("augmentation", "report")]


def test_running_ui_is_found_by_its_store_and_port(tmp_path):
    """`python -m groklab.tracking` links to the `mlflow ui` that serves this store, at the
    port its command line gives (a fake /proc: each process's cmdline and cwd)."""
    repo, proc = tmp_path / "repo", tmp_path / "proc"
    repo.mkdir()

    def process(pid: int, args: list[str], cwd: Path) -> None:
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in args) + b"\0")
        (proc / str(pid) / "cwd").symlink_to(cwd)

    process(10, ["python", "/v/bin/mlflow", "ui", "--backend-store-uri", "sqlite:///other.db",
                 "--port", "5002"], repo)
    process(11, ["python", "/v/bin/mlflow", "ui", "--backend-store-uri", "sqlite:///mlflow.db",
                 "-p", "5001"], repo)
    process(12, ["bash", "-c", "mlflow ui"], repo)
    assert running_ui(f"sqlite:///{repo}/mlflow.db", proc) == "http://127.0.0.1:5001"
    other = f"sqlite:///{tmp_path}/elsewhere.db"
    assert running_ui(other, proc) is None
    process(13, ["/v/bin/mlflow", "server", f"--backend-store-uri={other}", "--host",
                 "0.0.0.0"], tmp_path)
    assert running_ui(other, proc) == "http://127.0.0.1:5000"  # mlflow's default port


@pytest.mark.slow
def test_screenshot_script_refuses_an_unknown_experiment_in_one_line(mlflow_server, tmp_path,
                                                                     monkeypatch):
    """scripts/mlflow_ui_screenshot.py --experiment NAME: a name the store lacks ends in one
    line listing the experiments it has (it was an HTTP 404 traceback)."""
    from mlflow_ui_screenshot import experiment_id

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    with stage_tracker("shot-known", "baseline@x_plus_y", task="x_plus_y", root=tmp_path):
        pass
    known = api(mlflow_server, "experiments/get-by-name", experiment_name="shot-known")
    assert experiment_id(mlflow_server, "shot-known") == known["experiment"]["experiment_id"]
    with pytest.raises(SystemExit) as stop:
        experiment_id(mlflow_server, "train")
    line = str(stop.value.code)
    assert "\n" not in line and line.startswith("mlflow_ui_screenshot: --experiment 'train' "
                                                "is not in the store; it has: ")
    assert "shot-known" in line.split("it has: ")[1].split(", ")

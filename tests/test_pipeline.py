"""The DVC pipeline end to end: real git, real dvc, a temporary clone, tiny parameters."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow

TINY = {
    "tasks": ["x_plus_y"],
    "seeds": [0],
    "data": {"p": 11, "train_fraction": 0.5, "encoding": "full"},
    "model": {"width": 32, "heads": 2},
    "train": {"steps": 40, "batch_size": 64, "eval_every": 10},
    "studies": {  # every study, one or two tiny cells each
        "augmentation": {"tasks": ["x_plus_y"], "augs": ["baseline", "combined30"]},
        "curriculum": {"tasks": ["x_plus_y"], "schedules": ["linear"]},
        "architecture": {"tasks": ["x_plus_y"], "archs": ["mlp"]},
        "optimizer": {"tasks": ["x_div_y"], "variants": ["sgd_nesterov"]},
        "data_fraction": {"tasks": ["x_plus_y"], "fractions": [0.3]},
        "batch_size": {"tasks": ["x_plus_y"], "sizes": [32]},
        "multivariate": {"operands": [3], "settings": {"data": {"p": 5}}},
        "concealment": {"concealed_bits": [4],
                        "settings": {"train": {"steps": 40, "eval_every": 10}}},
        "linear_teacher": {"lams": [0.5, 0.8], "seeds": [0], "d_in": 60},
    },
}


def run(cmd: list[str], cwd: Path, env: dict | None = None, check: bool = True
        ) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900,
                          env=env or pipeline_env())
    if check and proc.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def pipeline_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"  # `python` in dvc.yaml is this venv's
    env.update(extra)
    return env


def merge(base: dict, small: dict) -> dict:
    out = dict(base)
    for key, value in small.items():
        out[key] = merge(base[key], value) if isinstance(value, dict) and key in base else value
    return out


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git repo holding this project's files with tiny params, after one `dvc repro`."""
    dest = tmp_path_factory.mktemp("pipeline") / "groklab"
    files = run(["git", "ls-files", "-co", "--exclude-standard"], ROOT).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(merge(params, TINY), sort_keys=False))
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        run(cmd, dest)
    run([str(BIN / "dvc"), "repro"], dest)
    commit(dest, "repro")
    return dest


def commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], repo)


def test_repro_produces_every_declared_output(repo):
    for path in ["data/x_plus_y/card.json", "data/parity/equations.csv",
                 "models/train/x_plus_y/history.csv", "models/train/x_plus_y/seed0.pt",
                 "models/augmentation/x_plus_y-combined30/final.csv",
                 "reports/metrics/train.json", "reports/metrics/augmentation.json",
                 "reports/tables/augmentation_cells.csv", "reports/curves/train/x_plus_y.csv",
                 "reports/report.md", "reports/figures/augmentation_leakage.png",
                 "models/concealment/parity-4/history.csv", "models/linear_teacher/curves.csv",
                 "reports/metrics/linear_teacher.json", "reports/tables/multivariate_cells.csv"]:
        assert (repo / path).exists(), path
    status = run([str(BIN / "dvc"), "status"], repo).stdout
    assert "up to date" in status.lower(), status
    card = json.loads((repo / "data/x_plus_y/card.json").read_text())
    assert card["n_equations"] == 121 and card["splits"]["0"] == {"train": 60, "val": 61}
    metrics = json.loads((repo / "reports/metrics/augmentation.json").read_text())
    leak = metrics["x_plus_y"]["combined30"]["val_reachable_mean"]
    assert leak == pytest.approx(card["val_reachable"]["combined30"]["0"], abs=1e-6)


def test_knob_retrains_only_the_experiment_and_metrics_diff(repo):
    out = run([str(BIN / "dvc"), "exp", "run", "-S", "aug=combined30", "-n", "c30"], repo)
    log = out.stdout + out.stderr
    ran = set(re.findall(r"Running stage '([^']+)'", log))
    assert ran == {"train@x_plus_y", "evaluate", "report"}, log  # no study retrains
    diff = run([str(BIN / "dvc"), "metrics", "diff", "--json"], repo).stdout
    changed = json.loads(diff)["reports/metrics/train.json"]
    assert changed["x_plus_y.val_reachable_mean"]["old"] == 0
    assert changed["x_plus_y.val_reachable_mean"]["new"] > 0.3
    shown = json.loads(run([str(BIN / "dvc"), "exp", "show", "--json"], repo).stdout)
    names = json.dumps(shown)
    assert '"c30"' in names and "val_reachable_mean" in names
    db = sqlite3.connect(repo / "mlflow.db")
    exp_names = {r[0] for r in db.execute(
        "select value from tags where key='dvc.exp_name'")}
    assert "c30" in exp_names


def test_queued_cells_land_in_the_repos_mlflow_database(repo):
    for aug in ("negation", "reversal"):
        run([str(BIN / "dvc"), "exp", "run", "--queue", "-S", f"aug={aug}", "-n", f"q-{aug}"],
            repo)
    run([str(BIN / "dvc"), "queue", "start", "-j", "2"], repo)
    deadline = time.time() + 600
    while time.time() < deadline:
        status = run([str(BIN / "dvc"), "queue", "status"], repo).stdout
        if "Running" not in status and "Queued" not in status:
            break
        time.sleep(3)
    assert "Failed" not in status, status + run([str(BIN / "dvc"), "queue", "logs", "q-negation"],
                                                repo, check=False).stdout
    db = sqlite3.connect(repo / "mlflow.db")
    tagged = {r[0] for r in db.execute("select value from tags where key='dvc.exp_name'")}
    assert {"q-negation", "q-reversal"} <= tagged
    stages = {r[0] for r in db.execute(
        "select t1.value from tags t1 join tags t2 on t1.run_uuid = t2.run_uuid "
        "where t1.key='dvc.stage' and t2.key='dvc.exp_name' and t2.value like 'q-%'")}
    assert "train@x_plus_y" in stages

"""The DVC pipeline end to end: real git, real dvc, a temporary clone, tiny parameters."""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from project_copy import copy_project

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow

TINY = {
    "tasks": ["x_plus_y"],
    "seeds": [0],
    "baseline": {"tasks": ["x_plus_y", "x_div_y"]},
    "data": {"p": 11, "train_fraction": 0.5, "encoding": "full"},
    "model": {"width": 32, "heads": 2},
    "train": {"steps": 40, "batch_size": 32, "eval_every": 10},
    "studies": {  # every study, one or two tiny cells each
        "augmentation": {"tasks": ["x_plus_y"], "values": ["combined30"]},
        "curriculum": {"tasks": ["x_plus_y"], "values": ["linear"]},
        "architecture": {"tasks": ["x_plus_y"], "values": ["mlp"]},
        "optimizer": {"tasks": ["x_div_y"], "values": ["sgd_nesterov"]},
        "data_fraction": {"tasks": ["x_plus_y"], "values": [0.3, 0.7],
                          "value_settings": {0.3: {"data": {"p": 13}}}},
        "batch_size": {"tasks": ["x_plus_y"], "values": [16]},
        "multivariate": {"values": [3], "settings": {"data": {"p": 5}}},
        "concealment": {"values": [4],
                        "settings": {"train": {"steps": 40, "eval_every": 10}}},
        "linear_teacher": {"values": [0.5, 0.8], "settings": {"d_in": 60}},
        "mechanism": {"settings": {"data": {"p": 11, "train_fraction": 0.5},
                                   "train": {"steps": 40, "eval_every": 10}}},
        "accelerators": {"values": ["grokfast_ema", "grokfast_ema_lr"],
                         "settings": {"data": {"p": 11}, "train": {"steps": 40,
                                                                   "eval_every": 10}}},
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


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git repo holding this project's files with tiny params, after one `dvc repro`."""
    dest = copy_project(tmp_path_factory.mktemp("pipeline") / "groklab", TINY)
    # MLflow off for this first run (logging to SQLite costs seconds a stage): the tests
    # that read the repo's MLflow database log their own runs.
    run([str(BIN / "dvc"), "repro"], dest, pipeline_env(GROKLAB_TRACKING="off"))
    commit(dest, "repro")
    return dest


def commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], repo)


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([str(BIN / "dvc"), *args], repo, check=check)


def test_repro_produces_every_declared_output(repo):
    for path in ["data/x_plus_y/card.json", "data/x_div_y/equations.csv",
                 "models/baseline/x_plus_y/history.csv", "checkpoints/baseline/x_plus_y/seed0.pt",
                 "models/experiment/x_plus_y/source.json",
                 "models/augmentation/x_plus_y-combined30/final.csv",
                 "reports/metrics/experiment/x_plus_y.json",
                 "reports/metrics/augmentation/x_plus_y-combined30.json",
                 "reports/tables/augmentation_cells.csv", "reports/curves/experiment/x_plus_y.csv",
                 "reports/report.md", "reports/figures/augmentation_leakage.png",
                 "models/concealment/parity-4/history.csv",
                 "models/linear_teacher/linear_regression-0.8/history.csv",
                 "reports/metrics/linear_teacher/linear_regression-0.8.json",
                 "reports/tables/multivariate_cells.csv"]:
        assert (repo / path).exists(), path
    status = dvc(repo, "status").stdout
    assert "up to date" in status.lower(), status
    card = json.loads((repo / "data/x_plus_y/card.json").read_text())
    assert card["n_equations"] == 121
    assert card["splits"]["0"] == {"train": 60, "val": 61, "val_in_train": 0.0}
    runs = pd.read_csv(repo / "reports/tables/augmentation_runs.csv")
    leak = runs.set_index("aug").loc["combined30", "val_reachable"]
    assert leak == pytest.approx(card["val_reachable"]["combined30"]["0"], abs=1e-6)
    # The pooled modular-arithmetic analysis counts each trained run once: the folders of
    # trained modular cells (baseline and studies, not parity or the linear model) × seeds.
    modular = [p for p in (repo / "models").glob("*/*/config.json")
               if json.loads(p.read_text())["config"].get("data", {}).get("task")
               not in (None, "parity")]
    report = (repo / "reports/report.md").read_text()
    pooled = report.split("## Sharpness across all modular-arithmetic runs")[1]
    assert f"{len(modular)} distinct runs" in pooled


def test_no_trained_cell_repeats_another_run(repo):
    """Every folder that holds a trained run has its own configuration and seeds; studies
    read the base run for their default value instead of training it again."""
    configs = {}
    for path in sorted((repo / "models").glob("*/*/config.json")):
        meta = json.loads(path.read_text())
        key = json.dumps([meta["config"], meta["seeds"]], sort_keys=True)
        assert key not in configs, f"{path.parent} repeats {configs.get(key)}"
        configs[key] = path.parent
    cells = pd.read_csv(repo / "reports/tables/augmentation_cells.csv")
    assert cells.set_index("aug").loc["baseline", "source"] == "baseline@x_plus_y"
    fraction = pd.read_csv(repo / "reports/tables/data_fraction_cells.csv")
    assert list(fraction["train_fraction"]) == [0.3, 0.5, 0.7]
    p = {f: json.loads((repo / "models" / path / "config.json").read_text())["config"]["data"]["p"]
         for f, path in zip(fraction["train_fraction"], fraction["path"], strict=True)}
    assert p == {0.3: 13, 0.5: 11, 0.7: 11}


@pytest.mark.parametrize("edit, new_stage", [
    (lambda p: (p["augmentations"].update(swap_only={"reverse": 0.5, "negate": 0.0}),
                p["studies"]["augmentation"]["values"].append("swap_only")),
     "augmentation@x_plus_y-swap_only"),
    (lambda p: (p["curricula"].update(slow={"pacing": "linear", "order": "easiest_first",
                                            "start": 0.1, "ramp": 0.9}),
                p["studies"]["curriculum"]["values"].append("slow")),
     "curriculum@x_plus_y-slow"),
    (lambda p: (p["optimizers"].update(adamw_lr3={**p["optimizers"]["adamw"], "lr": 0.003}),
                p["studies"]["optimizer"]["values"].append("adamw_lr3")),
     "optimizer@x_div_y-adamw_lr3"),
    (lambda p: p["studies"]["data_fraction"]["values"].append(0.6),
     "data_fraction@x_plus_y-0.6"),
    (lambda p: p["studies"]["accelerators"]["values"].append("orthograd"),
     "accelerators@x_mul_y-orthograd"),
])
def test_adding_a_variant_or_value_retrains_no_existing_cell(repo, edit, new_stage):
    path = repo / "params.yaml"
    before = path.read_text()
    params = yaml.safe_load(before)
    edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = json.loads(dvc(repo, "status", "--json").stdout)
    finally:
        path.write_text(before)
    trained = {name for name in status if name.split("@")[0] not in
               ("generate", "evaluate", "report")}
    assert trained == {new_stage}, status
    assert set(status) <= {new_stage, "evaluate", "report", *(f"generate@{t}" for t in
                                                             ("x_plus_y", "x_div_y"))}


def _lock_entry(repo: Path, stage: str) -> dict:
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"][stage]


def test_forced_reruns_write_identical_outputs_also_beside_another_trainer(repo):
    """`dvc repro -f` of the same configuration twice gives the same dvc.lock entry, the
    second time while another trainer runs beside it (one thread each: the thread count,
    which sets the order of float sums, is part of what decides the bytes)."""
    env = pipeline_env(GROKLAB_THREADS="1", GROKLAB_TRACKING="off")
    run([str(BIN / "dvc"), "repro", "-f", "baseline@x_plus_y"], repo, env)
    first = _lock_entry(repo, "baseline@x_plus_y")
    beside = subprocess.Popen(
        [sys.executable, "-m", "groklab.cli", "run", "--params", str(repo / "params.yaml"),
         "--task", "x_div_y", "--p", "11", "--steps", "100000", "--quiet"],
        cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)
        assert beside.poll() is None  # still training beside the rerun
        run([str(BIN / "dvc"), "repro", "-f", "baseline@x_plus_y"], repo, env)
    finally:
        beside.kill()
        beside.wait()
    assert _lock_entry(repo, "baseline@x_plus_y")["outs"] == first["outs"]


def test_a_killed_stage_leaves_no_running_mlflow_run_after_its_rerun(repo):
    # The repo's store made first (the fixture trained with MLflow off), as the stage's own
    # connection would make it: the kill is to land in a stage's run, not in the creation of
    # the store's tables.
    run([sys.executable, "-c", "import sys; from pathlib import Path; "
         "from groklab.mlflow_store import connect; from groklab.tracking import tracking_uri; "
         "connect(tracking_uri(Path(sys.argv[1])), 'curriculum', Path(sys.argv[1]))",
         str(repo)], repo)
    proc = subprocess.Popen([str(BIN / "dvc"), "repro", "-f", "curriculum@x_plus_y-linear"],
                            cwd=repo, env=pipeline_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    out, deadline = repo / "models/curriculum/x_plus_y-linear", time.time() + 120
    while out.exists() and time.time() < deadline:
        time.sleep(0.2)  # DVC removes a stage's outputs before it runs it
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage, before it finished
    proc.wait()
    run([str(BIN / "dvc"), "repro", "curriculum@x_plus_y-linear"], repo)
    db = sqlite3.connect(repo / "mlflow.db")
    running = db.execute("select r.name from runs r join tags t on r.run_uuid = t.run_uuid "
                         "where t.key = 'dvc.stage' and r.status = 'RUNNING'").fetchall()
    assert running == []
    assert (repo / "models/curriculum/x_plus_y-linear/history.csv").exists()


def test_knob_trains_only_the_experiment_and_metrics_diff(repo):
    out = dvc(repo, "exp", "run", "-S", "aug=combined30", "-n", "c30")
    log = out.stdout + out.stderr
    ran = set(re.findall(r"Running stage '([^']+)'", log))
    assert ran == {"experiment@x_plus_y", "evaluate", "report"}, log  # no study retrains
    diff = json.loads(dvc(repo, "metrics", "diff", "--json").stdout)
    assert set(diff) == {"reports/metrics/experiment/x_plus_y.json"}, diff  # one row per cell
    changed = diff["reports/metrics/experiment/x_plus_y.json"]
    assert changed["val_reachable"]["old"] == 0 and changed["val_reachable"]["new"] > 0
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    assert '"c30"' in json.dumps(shown)
    db = sqlite3.connect(repo / "mlflow.db")
    exp_names = {r[0] for r in db.execute(
        "select value from tags where key='dvc.exp_name'")}
    assert "c30" in exp_names


def test_queued_cells_land_in_the_repos_mlflow_database(repo):
    for aug in ("negation", "reversal"):
        dvc(repo, "exp", "run", "--queue", "-S", f"aug={aug}", "-n", f"q-{aug}")
    dvc(repo, "queue", "start", "-j", "2")
    deadline = time.time() + 600
    while time.time() < deadline:
        status = dvc(repo, "queue", "status").stdout
        if "Running" not in status and "Queued" not in status:
            break
        time.sleep(3)
    assert "Failed" not in status, status + dvc(repo, "queue", "logs", "q-negation",
                                                check=False).stdout
    db = sqlite3.connect(repo / "mlflow.db")
    tagged = {r[0] for r in db.execute("select value from tags where key='dvc.exp_name'")}
    assert {"q-negation", "q-reversal"} <= tagged
    stages = {r[0] for r in db.execute(
        "select t1.value from tags t1 join tags t2 on t1.run_uuid = t2.run_uuid "
        "where t1.key='dvc.stage' and t2.key='dvc.exp_name' and t2.value like 'q-%'")}
    assert "experiment@x_plus_y" in stages


TOY_SECTION = '''"""The encoding study: full [a, op, b, =] against compact [a, b, =] tokens."""

from groklab.report import study as st
from groklab.report.context import Context, Section, StudyTables


def body(ctx: Context, tables: StudyTables) -> list[str]:
    budget = ctx.budget("encoding")
    return [st.study_table(tables.cells, "encoding"), *st.notes(ctx, tables, budget),
            *st.reading(tables.cells, "encoding", budget, tables)]


SECTIONS = (Section("encoding", "Encoding study", body),)
'''


def test_adding_a_study_takes_the_three_readme_steps(repo):
    """README's "Add a study", done as written: a declaration in params.yaml, one stage
    block in dvc.yaml (copied from a sibling), one report module. Nothing else retrains."""
    from test_structure import declaration_problems

    params = yaml.safe_load((repo / "params.yaml").read_text())  # 1. the declaration
    params["studies"]["encoding"] = {"factor": "data.encoding", "values": ["compact"],
                                     "tasks": ["x_plus_y"], "settings": {},
                                     "value_settings": {}}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    text = (repo / "dvc.yaml").read_text()  # 2. a stage block copied from `batch_size`
    block = text[text.index("  batch_size:\n"):text.index("  multivariate:\n")]
    (repo / "dvc.yaml").write_text(text.replace(
        "  multivariate:\n", block.replace("batch_size", "encoding") + "  multivariate:\n"))
    (repo / "src/groklab/report/encoding.py").write_text(TOY_SECTION)  # 3. the report

    env = pipeline_env(PYTHONPATH=str(repo / "src"))  # the clone's code, new module included
    listed = run([sys.executable, "-c", "from groklab.report.sections import SECTIONS; "
                  "print(sorted({s.study for s in SECTIONS if s.study}))"], repo, env).stdout
    assert declaration_problems(repo, set(ast.literal_eval(listed)) | {None}) == []
    status = json.loads(run([str(BIN / "dvc"), "status", "--json"], repo, env).stdout)
    assert set(status) == {"encoding@x_plus_y-compact", "evaluate", "report"}, status
    out = run([str(BIN / "dvc"), "repro"], repo, env)
    ran = set(re.findall(r"Running stage '([^']+)'", out.stdout + out.stderr))
    assert ran == {"encoding@x_plus_y-compact", "evaluate", "report"}
    report = (repo / "reports/report.md").read_text()
    assert "## Encoding study" in report and "| x_plus_y | compact |" in report
    metrics = {p.stem for p in (repo / "reports/metrics/encoding").glob("*.json")}
    assert metrics == {"x_plus_y-full", "x_plus_y-compact"}  # full: the base run, read


def test_study_so_far_tests_only_the_current_cells_it_finds(repo, tmp_path):
    """scripts/study_so_far.py: a cell not trained yet is named as such, a folder trained with
    another configuration is left out and named, and the cells it keeps get evaluate's
    comparisons."""
    import shutil

    models = tmp_path / "models"
    shutil.copytree(repo / "models", models)
    script = [sys.executable, str(ROOT / "scripts/study_so_far.py"), "data_fraction",
              "--params", str(repo / "params.yaml"), "--models", str(models)]
    whole = run(script, repo).stdout
    assert whole.startswith("3 of 3 cells trained\n")  # the base run stands in for 0.5
    expected = pd.read_csv(repo / "reports/tables/data_fraction_comparisons.csv")
    for _, row in expected.iterrows():  # one table row per comparison, with its verdict
        line = next(x for x in whole.splitlines()
                    if x.startswith(f"| {row['task']} | `{row['value']:g}` |"))
        by = "time ratio" if row["decided_by"].startswith("log-normal") else "log-rank"
        assert line.endswith(f"| {row['verdict']} ({by}) |")
    cells = pd.read_csv(repo / "reports/tables/data_fraction_cells.csv")
    for _, c in cells.iterrows():  # the per-cell table as evaluate counts the seeds
        line = next(x for x in whole.splitlines()
                    if x.startswith(f"| {c['task']} | {c['train_fraction']:g} |"))
        reached = f"{int(c['n_seeds'] - c['n_censored'])}/{int(c['n_seeds'])}"
        assert line.split(" | ")[3] == reached
    shutil.rmtree(models / "data_fraction/x_plus_y-0.7")
    config = models / "data_fraction/x_plus_y-0.3/config.json"
    meta = json.loads(config.read_text())
    meta["config"]["data"]["p"] += 2  # trained with another p than params.yaml gives
    config.write_text(json.dumps(meta))
    proc = run(script, repo)
    assert proc.stdout.startswith("1 of 3 cells trained; not yet: data_fraction@x_plus_y-0.7\n")
    assert proc.stderr == ("left out: data_fraction@x_plus_y-0.3 (trained with another "
                           "configuration)\n")
    for value in ("0.3", "0.7"):  # in neither table
        assert f"| x_plus_y | `{value}` |" not in proc.stdout
        assert f"| x_plus_y | {value} |" not in proc.stdout
    assert "| x_plus_y | 0.5 |" in proc.stdout

"""README's workflow end to end, as a researcher lives it: real git, real dvc and make, a
temporary repo holding this project with tiny params.

The sequence is README's (``WORKFLOW``, checked against README): the first look, the
pipeline, committing its results, the augmentation experiment, then ``dvc metrics diff``,
``dvc exp show``, ``make compare`` and ``dvc plots diff`` against that commit. The tiny
configuration makes combined30 reach 99% validation accuracy within the budget while the
base run does not (at p = 11 and a 0.9 training fraction every validation pair is reachable
under combined30), so the steps-to-99 rows change.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from first_look_params import first_look_overrides, first_look_params
from localhost import free_port
from project_copy import copy_project

from groklab.params import load_params

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WIDTH = 120  # the terminal the comparison must fit
BUDGET = 300  # updates of the base run and the experiment

# README's workflow, in order; test_readme_shows_this_workflow holds README to it.
WORKFLOW = [
    "make first-look",
    "make first-look-report",
    "make repro",
    "git add dvc.lock data models reports",
    "dvc exp run -S aug=combined30",
    "dvc metrics diff",
    "dvc exp show --only-changed --no-pager",
    "make compare",
    "dvc plots diff",
]

SHORT = {"train": {"steps": 40}}  # study cells: a few updates each, enough to evaluate
TINY = {
    "tasks": ["x_plus_y"],
    "seeds": [0],
    "baseline": {"tasks": ["x_plus_y"]},
    "data": {"p": 11, "train_fraction": 0.9},
    "model": {"width": 32, "heads": 2},
    "train": {"steps": BUDGET, "batch_size": 32, "eval_every": 10},
    "optimizers": {"adamw": {"lr": 0.003, "warmup": 10}},
    "studies": {  # one cell each
        "augmentation": {"tasks": ["x_plus_y"], "values": ["reversal"], "settings": SHORT},
        "curriculum": {"tasks": ["x_plus_y"], "values": ["linear"], "settings": SHORT},
        "architecture": {"tasks": ["x_plus_y"], "values": ["mlp"], "settings": SHORT},
        "optimizer": {"tasks": ["x_plus_y"], "values": ["sgd_nesterov"], "settings": SHORT},
        "data_fraction": {"values": [0.5], "value_settings": {}, "settings": SHORT},
        "batch_size": {"values": [16], "settings": SHORT},
        "multivariate": {"values": [3], "settings": {"data": {"p": 5}, **SHORT}},
        "concealment": {"values": [4], "settings": {"train": {"steps": 40, "eval_every": 10}}},
        "linear_teacher": {"values": [0.5], "settings": {"d_in": 60}},
    },
}


# MLflow is off here (test_tracking.py and test_pipeline.py cover it): logging to a SQLite
# store costs about 5 s a stage. GROKLAB_TRACKING=off turns it off; where that is not
# read, an address nothing listens on makes every stage skip tracking at once.
NO_TRACKING = {"GROKLAB_TRACKING": "off", "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}


def env(**extra: str) -> dict[str, str]:
    # Not MAKEFLAGS/MAKELEVEL either: under `make test` they would turn the user's `make`
    # into a sub-make that prints "Entering directory" lines.
    out = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "DVC_", "MAKE", "MFLAGS"))}
    out["PATH"] = f"{BIN}{os.pathsep}{out['PATH']}"  # `python` and `dvc`: this venv's
    return {**out, **NO_TRACKING, **extra}


def sh(repo: Path, cmd: str, check: bool = True, **extra: str) -> subprocess.CompletedProcess:
    """Run ``cmd`` as a person would type it; ``make`` never builds a venv here (-o)."""
    args = shlex.split(cmd)
    if args[0] == "make":
        args[1:1] = ["-o", ".venv/bin/.installed"]
    proc = subprocess.run(args, cwd=repo, capture_output=True, text=True, timeout=900,
                          env=env(**extra))
    if check and proc.returncode:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-4000:]}")
    return proc


def first_reach(history: Path, level: float = 0.99) -> int | None:
    """The first evaluated update whose validation accuracy reaches ``level``, read from a
    one-seed history.csv with the csv module."""
    with history.open(newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["step"]))
    return next((int(r["step"]) for r in rows if float(r["val_acc"]) >= level), None)


def table_rows(text: str) -> list[str]:
    """The data rows of a DVC table (the lines after its header line)."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[1:]


@pytest.fixture(scope="module")
def flow(tmp_path_factory) -> dict:
    """The whole workflow in a fresh repo; each step's output, by command."""
    repo = copy_project(tmp_path_factory.mktemp("workflow") / "groklab", TINY)
    git = "git -c user.name=t -c user.email=t@t"
    out: dict = {"repo": repo}
    for cmd in WORKFLOW:
        if cmd == "make first-look":
            # At the tiny params themselves (no overrides): then `make repro` restores
            # every cell from DVC's run cache instead of training it again.
            out[cmd] = sh(repo, "make first-look FIRST_LOOK=")
            out["git status"] = sh(repo, "git status --porcelain").stdout
            # The dry run lists every training stage, then stops at evaluate: DVC cannot
            # hash its input models/ before a stage has written it (so on any fresh clone).
            out["dvc repro --dry"] = sh(repo, "dvc repro --dry", check=False).stdout
            out["make first-look again"] = sh(repo, "make first-look FIRST_LOOK=", check=False)
        elif cmd.startswith("git add"):
            sh(repo, cmd)
            sh(repo, f"{git} commit -qm 'Results at the papers settings'")
            out["head metrics"] = json.loads(sh(
                repo, "git show HEAD:reports/metrics/experiment.json").stdout)
        else:
            out[cmd] = sh(repo, cmd, COLUMNS=str(WIDTH))
    return out


@pytest.mark.slow
def test_first_look_leaves_the_workspace_as_it_was(flow):
    log = flow["make first-look"].stdout + flow["make first-look"].stderr
    assert "dvc exp run --temp -n first-look" in log
    assert "Harmless" in log  # DVC's 'No file hash info found' warnings are explained
    assert flow["git status"] == ""  # params.yaml and all the rest
    dry = flow["dvc repro --dry"]
    stages = ["baseline@x_plus_y", "experiment@x_plus_y", "concealment@parity-4",
              "augmentation@x_plus_y-reversal", "linear_teacher@linear_regression-0.5"]
    for stage in stages:
        assert f"Running stage '{stage}'" in dry, dry
    again = flow["make first-look again"]
    assert again.returncode != 0
    assert "already has a first look" in again.stdout


@pytest.mark.slow
def test_first_look_report_is_the_experiments_own(flow):
    repo = flow["repo"]
    ref = subprocess.run(["git", "for-each-ref", "--format=%(refname)",
                          "refs/exps/*/*/first-look"], cwd=repo, capture_output=True,
                         text=True, check=True).stdout.split()
    assert len(ref) == 1, ref
    kept = subprocess.run(["git", "show", f"{ref[0]}:reports/report.md"], cwd=repo,
                          capture_output=True, text=True, check=True).stdout
    assert kept.startswith("# Grokking report")
    assert (repo / "first-look/report.md").read_text() == kept
    links = re.findall(r"\]\((figures/[^)]+\.png)\)", kept)
    assert links, "the report links no figure"
    for link in links:
        assert (repo / "first-look" / link).is_file(), link
    metrics = json.loads((repo / "first-look/metrics/experiment.json").read_text())
    assert "x_plus_y" in metrics


@pytest.mark.slow
def test_repro_after_the_first_look_restores_rather_than_retrains(flow):
    log = flow["make repro"].stdout
    assert "is cached - skipping run" in log, log
    assert "Running stage 'baseline@x_plus_y'" not in log


@pytest.mark.slow
def test_the_experiment_changes_steps_to_99(flow):
    """The oracle: each run's own history, read with plain Python."""
    repo = flow["repo"]
    base = first_reach(repo / "models/baseline/x_plus_y/history.csv")
    exp = first_reach(repo / "models/experiment/x_plus_y/history.csv")
    assert base is None, "the base run must not reach 99% within the budget"
    assert exp is not None and exp < BUDGET, "combined30 must reach 99% within the budget"
    assert flow["head metrics"]["x_plus_y"]["steps_to_99_mean"] == BUDGET  # censored


@pytest.mark.slow
def test_metrics_diff_is_short_clean_and_right(flow):
    proc = flow["dvc metrics diff"]
    assert "WARNING" not in proc.stdout + proc.stderr
    assert "failed to load" not in proc.stdout + proc.stderr
    rows = table_rows(proc.stdout)
    assert 0 < len(rows) <= 40, proc.stdout
    repo = flow["repo"]
    new = first_reach(repo / "models/experiment/x_plus_y/history.csv")
    steps = [r.split() for r in rows if "x_plus_y.steps_to_99_mean" in r]
    assert len(steps) == 1, proc.stdout
    path, _, old_value, new_value, change = steps[0]
    assert path == "reports/metrics/experiment.json"
    assert (float(old_value), float(new_value)) == (BUDGET, new)
    assert float(change) == new - BUDGET
    assert all("reports/metrics/experiment.json" in r for r in rows), "only the experiment"


@pytest.mark.slow
def test_exp_show_fits_the_terminal(flow):
    """DVC fits its table to the terminal, folding the columns past it into "…" (the
    experiment's own metrics and `aug` here); `make compare` shows them all."""
    text = flow["dvc exp show --only-changed --no-pager"].stdout
    assert max(len(line) for line in text.splitlines()) <= WIDTH, text
    assert "x_plus_y.steps_to_99_mean" in text


@pytest.mark.slow
def test_compare_fits_and_names_what_changed(flow):
    text = flow["make compare"].stdout
    lines = [line for line in text.splitlines() if not line.startswith("python ")]
    assert max(len(line) for line in lines) <= WIDTH, text
    header, *rows = lines
    assert header.split()[0] == "main" and len(header.split()) == 2, header
    by_name = {r.rsplit(None, 2)[0].strip(): r.rsplit(None, 2)[1:] for r in rows}
    assert by_name["aug"] == ["baseline", "combined30"]
    new = first_reach(flow["repo"] / "models/experiment/x_plus_y/history.csv")
    assert by_name["experiment: x_plus_y.steps_to_99_mean"] == [str(BUDGET), str(new)]
    assert not any(name.startswith(("augmentation:", "curriculum:")) for name in by_name)


@pytest.mark.slow
def test_plots_diff_writes_every_study_offline(flow):
    repo = flow["repo"]
    page = (repo / "dvc_plots/index.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", page, re.I)
    assert not re.search(r"<link[^>]*\bhref\s*=\s*[\"']?(https?:)?//", page, re.I)
    assert "vegaEmbed" in page and "{plot_divs}" not in page
    params = load_params(repo / "params.yaml")
    for family in ("baseline", "experiment", *params["studies"]):
        assert f"reports/curves/{family}/" in page, family
    spec = page[page.index("reports/curves/experiment/x_plus_y.csv"):]
    assert '"HEAD"' in spec[:200_000] and '"workspace"' in spec[:200_000]
    static = {p.name for p in (repo / "dvc_plots/static").iterdir()}
    for figure in (repo / "reports/figures").glob("*.png"):
        for rev in ("HEAD", "workspace"):
            assert f"{rev}_reports_figures_{figure.name}" in static, (rev, figure.name)
            assert f"static/{rev}_reports_figures_{figure.name}" in page


# --- Static checks (no pipeline run) ---------------------------------------------------

def test_readme_shows_this_workflow():
    text = (ROOT / "README.md").read_text()
    at = 0
    for cmd in WORKFLOW:
        found = text.find(cmd, at)
        assert found >= 0, f"README's workflow lacks {cmd!r} after position {at}"
        at = found + len(cmd)


def test_readme_first_look_command_is_the_makefiles():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"^dvc exp run --temp -n first-look (.*?)(?<!\\)\n", text,
                      re.S | re.M).group(1)
    assert shlex.split(block.replace("\\\n", " ")) == first_look_overrides()


def test_first_look_overrides_are_valid_params(tmp_path):
    """The Makefile's FIRST_LOOK overrides, applied by DVC's own parser to params.yaml,
    give a params file the pipeline accepts, with every study at x_plus_y or its own task."""
    path = tmp_path / "params.yaml"
    first_look_params(path)
    params = load_params(path)
    assert params["seeds"] == [0] and params["tasks"] == ["x_plus_y"]
    for name, study in params["studies"].items():
        assert study["values"], name
        assert set(study["tasks"]) <= {"x_plus_y", "multi_add", "parity",
                                       "linear_regression"}, name


def test_plots_template_needs_no_network():
    page = (ROOT / "plots/offline.html").read_text()
    assert "{plot_divs}" in page
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.I)
    for lib in ("vega@5.20.2", "vega-lite@5.2.0", "vega-embed@6.18.2"):
        assert f"<script>/* {lib} */" in page, lib
    config = (ROOT / ".dvc/config").read_text()
    assert re.search(r"html_template\s*=\s*\.\./plots/offline\.html", config)

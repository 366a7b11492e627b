"""README's workflow end to end, as a researcher lives it: real git, real dvc and make, a
temporary repo holding this project with tiny params.

Two sequences, each README's (checked against README). ``PRODUCE``, in the repo that makes
the results: the first look, the pipeline, committing its results (what a researcher reads
goes to git; checkpoints stay in DVC's cache). ``DAILY``, in a clone of that commit, which
has no DVC cache: a dry run that plans no stage, ``dvc metrics show``, the augmentation
experiment (which trains only ``experiment@<task>``, then evaluate and report), then
``dvc metrics diff``, ``dvc exp show``, ``make compare`` and ``dvc plots diff`` against the
shipped results. The tiny configuration makes combined30 reach 99% validation accuracy
within the budget while the base run does not (at p = 11 and a 0.9 training fraction every
validation pair is reachable under combined30), so the steps-to-99 rows change.
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
from groklab.stages.evaluate import families, family_rows
from groklab.summary import HEADLINE

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WIDTH = 120  # the terminal the comparison must fit
BUDGET = 300  # updates of the base run and the experiment

# README's workflows, each in order; test_readme_shows_this_workflow holds README to them.
# The daily loop, in a clone of the commit that holds the results (no DVC cache):
DAILY = [
    "dvc repro --dry --allow-missing",
    "dvc metrics show",
    "dvc exp run --allow-missing -S aug=combined30",
    "dvc metrics diff",
    "dvc exp show --only-changed --no-pager",
    "make compare",
    "dvc plots diff",
]
# Producing the results that ship:
PRODUCE = [
    "make first-look",
    "make first-look-report",
    "make repro",
    "git add params.yaml dvc.lock data models checkpoints reports",
]
WORKFLOW = [*DAILY, *PRODUCE]  # README's order: the daily loop first

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
        "mechanism": {"settings": {"data": {"p": 11, "train_fraction": 0.5},
                                   "train": {"steps": 40, "eval_every": 10}}},
        "accelerators": {"values": ["grokfast_ema"],
                         "settings": {"data": {"p": 11}, "train": {"steps": 40,
                                                                   "eval_every": 10}}},
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
    """Both workflows: the results produced and committed in a fresh repo, then the daily
    loop in a clone of it (no DVC cache); each step's output, by command."""
    base = tmp_path_factory.mktemp("workflow")
    repo = copy_project(base / "groklab", TINY)
    git = "git -c user.name=t -c user.email=t@t"
    out: dict = {"repo": repo, "clone": base / "clone"}
    for cmd in PRODUCE:
        if cmd == "make first-look":
            # At the tiny params themselves (no overrides). DVC keeps no run cache for a
            # stage whose outputs git holds, so `make repro` trains the cells again.
            out[cmd] = sh(repo, "make first-look FIRST_LOOK=")
            out["git status"] = sh(repo, "git status --porcelain").stdout
            # The dry run lists every training stage, then stops at evaluate: DVC cannot
            # hash its input models/ before a stage has written it (a repo with no results).
            out["dvc repro --dry"] = sh(repo, "dvc repro --dry", check=False).stdout
            out["make first-look again"] = sh(repo, "make first-look FIRST_LOOK=", check=False)
        elif cmd.startswith("git add"):
            sh(repo, cmd)
            sh(repo, f"{git} commit -qm 'Results at the papers settings'")
            out["committed status"] = sh(repo, "git status --porcelain").stdout
            out["committed"] = sh(repo, "git ls-files").stdout.split()
            out["head metrics"] = json.loads(sh(
                repo, "git show HEAD:reports/metrics/experiment/x_plus_y.json").stdout)
        else:
            out[cmd] = sh(repo, cmd, COLUMNS=str(WIDTH))
    clone = out["clone"]
    sh(base, f"git clone -q {repo} {clone}")
    out["clone has a DVC cache"] = (clone / ".dvc/cache").exists()
    for cmd in DAILY:
        # `dvc metrics show` at its natural width: no terminal folds it
        out[cmd] = sh(clone, cmd, COLUMNS=str(1000 if cmd == "dvc metrics show" else WIDTH))
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
    metrics = json.loads((repo / "first-look/metrics/experiment/x_plus_y.json").read_text())
    assert "steps_to_99" in metrics


@pytest.mark.slow
def test_make_repro_allows_missing_checkpoints_and_trains_every_cell_once(flow):
    log = flow["make repro"].stdout + flow["make repro"].stderr
    assert "python -m groklab.repro --allow-missing" in log
    # stages dvc repro runs itself, and the training cells the side-by-side pool reports
    ran = re.findall(r"Running stage '([^']+)'", log) + re.findall(r"^(\S+@\S+) done \(",
                                                                   log, re.MULTILINE)
    assert "baseline@x_plus_y" in ran and len(ran) == len(set(ran)), log


@pytest.mark.slow
def test_results_are_committed_and_checkpoints_are_not(flow):
    committed = set(flow["committed"])
    cell = "models/baseline/x_plus_y"
    for path in [f"{cell}/history.csv", f"{cell}/final.csv", f"{cell}/summary.json",
                 f"{cell}/config.json", f"{cell}/card.json", "data/x_plus_y/card.json",
                 "reports/report.md", "reports/metrics/experiment/x_plus_y.json",
                 "reports/tables/augmentation_cells.csv", "dvc.lock"]:
        assert path in committed, path
    assert not [f for f in committed if f.endswith(".pt")]  # checkpoints: DVC's cache only
    assert (flow["repo"] / "checkpoints/baseline/x_plus_y/seed0.pt").is_file()
    assert flow["committed status"] == ""  # params.yaml too: HEAD's params match dvc.lock


@pytest.mark.slow
def test_fresh_clone_without_cache_plans_no_stage(flow):
    assert not flow["clone has a DVC cache"]
    dry = flow["dvc repro --dry --allow-missing"].stdout
    assert "Running stage" not in dry, dry
    assert "Stage 'baseline@x_plus_y' didn't change, skipping" in dry, dry


@pytest.mark.slow
def test_fresh_clone_experiment_trains_only_its_cells(flow):
    proc = flow["dvc exp run --allow-missing -S aug=combined30"]
    ran = re.findall(r"Running stage '([^']+)'", proc.stdout + proc.stderr)
    assert ran == ["experiment@x_plus_y", "evaluate", "report"], proc.stdout


@pytest.mark.slow
def test_metrics_show_is_one_row_per_cell(flow):
    text = flow["dvc metrics show"].stdout
    header, *rows = [line for line in text.splitlines() if line.strip()]
    assert max(len(line) for line in text.splitlines()) <= 400, text
    assert header.split() == ["Path", *sorted(HEADLINE)]  # DVC sorts the columns
    cells = 0
    for table in (flow["clone"] / "reports/tables").glob("*_cells.csv"):
        with table.open(newline="") as f:
            cells += sum(1 for _ in csv.DictReader(f))
    assert len(rows) == cells, text
    assert all(r.split()[0].startswith("reports/metrics/") for r in rows), text


def test_metrics_show_fits_400_characters_at_full_scale(capsys):
    """DVC's own table, for one metrics file per cell of the default params.yaml, with
    values as wide as DVC prints them."""
    from dvc.compare import metrics_table

    params = load_params(ROOT / "params.yaml")
    files = {f"reports/metrics/{family}/{cell.name}.json":
             {"data": {key: 12345.678901 for key in HEADLINE}}
             for family in families(params) for cell, _ in family_rows(params, family)[1]}
    assert len(files) > 70
    metrics_table({"workspace": {"data": files}}).render()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(files) + 1
    assert max(len(line) for line in lines) <= 400


@pytest.mark.slow
def test_the_experiment_changes_steps_to_99(flow):
    """The oracle: each run's own history, read with plain Python."""
    clone = flow["clone"]
    base = first_reach(clone / "models/baseline/x_plus_y/history.csv")
    exp = first_reach(clone / "models/experiment/x_plus_y/history.csv")
    assert base is None, "the base run must not reach 99% within the budget"
    assert exp is not None and exp < BUDGET, "combined30 must reach 99% within the budget"
    assert flow["head metrics"]["steps_to_99"] == BUDGET  # censored


@pytest.mark.slow
def test_metrics_diff_is_short_clean_and_right(flow):
    proc = flow["dvc metrics diff"]
    assert "WARNING" not in proc.stdout + proc.stderr
    assert "failed to load" not in proc.stdout + proc.stderr
    rows = {r.split()[1]: r.split() for r in table_rows(proc.stdout)}
    new = first_reach(flow["clone"] / "models/experiment/x_plus_y/history.csv")
    path, _, old_value, new_value, change = rows["steps_to_99"]
    assert path == "reports/metrics/experiment/x_plus_y.json"
    assert (float(old_value), float(new_value)) == (BUDGET, new)
    assert float(change) == new - BUDGET
    assert all(r[0] == path for r in rows.values()), "only the experiment's cell"
    # Leakage is not rewarded silently: every validation pair is reachable under combined30
    # here, so the validation-accuracy rise stands beside val_reachable 0 -> 1 and a clean
    # accuracy that is no longer defined ("-": no clean pair left).
    assert rows["val_reachable"][2:] == ["0.0", "1.0", "1.0"], proc.stdout
    assert rows["clean_val_acc"][3] == "-", proc.stdout


@pytest.mark.slow
def test_exp_show_fits_the_terminal(flow):
    """DVC fits its table to the terminal, folding the columns past it into "…" (the
    experiment's own metrics and `aug` here); `make compare` shows them all."""
    text = flow["dvc exp show --only-changed --no-pager"].stdout
    assert max(len(line) for line in text.splitlines()) <= WIDTH, text
    assert "steps_to_99" in text


@pytest.mark.slow
def test_compare_fits_and_names_what_changed(flow):
    text = flow["make compare"].stdout
    lines = [line for line in text.splitlines() if not line.startswith("python ")]
    assert max(len(line) for line in lines) <= WIDTH, text
    header, *rows = lines
    assert header.split()[0] == "main" and len(header.split()) == 2, header
    by_name = {r.rsplit(None, 2)[0].strip(): r.rsplit(None, 2)[1:] for r in rows}
    assert by_name["aug"] == ["baseline", "combined30"]
    new = first_reach(flow["clone"] / "models/experiment/x_plus_y/history.csv")
    assert by_name["experiment/x_plus_y: steps_to_99"] == [str(BUDGET), str(new)]
    assert not any(name.startswith(("augmentation:", "curriculum:")) for name in by_name)


@pytest.mark.slow
def test_plots_diff_writes_every_study_offline(flow):
    proc = flow["dvc plots diff"]
    assert "failed to load" not in proc.stdout + proc.stderr  # reports/curves/.groklab
    repo = flow["clone"]
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
    for cmd in WORKFLOW:  # the daily loop, then how the results are produced
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
        assert set(study["tasks"]) <= {"x_plus_y", "x_mul_y", "multi_add", "parity",
                                       "linear_regression"}, name


def test_plots_template_needs_no_network():
    page = (ROOT / "plots/offline.html").read_text()
    assert "{plot_divs}" in page
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.I)
    for lib in ("vega@5.20.2", "vega-lite@5.2.0", "vega-embed@6.18.2"):
        assert f"<script>/* {lib} */" in page, lib
    config = (ROOT / ".dvc/config").read_text()
    assert re.search(r"html_template\s*=\s*\.\./plots/offline\.html", config)

"""The report stage: figures, markdown pieces and report.md from a small fixture tree.

The fixture tree has the layout the `evaluate` stage writes. Its histories are synthetic
(erf-shaped curves, a few seconds to build) but the per-seed and per-cell tables come from
the real :func:`seed_summaries_from` and :func:`cell_summary`, so the columns are exact.
A slow test repeats the check on a tree trained for real.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import special

from groklab.report import figures, markdown
from groklab.stages.report import main
from groklab.summary import cell_summary, seed_summaries_from
from groklab.train import HISTORY_COLUMNS

REPO = Path(__file__).resolve().parents[1]
BUDGET, EVAL_EVERY, SEEDS = 300, 10, [0, 1, 2]
TASKS = ["x_plus_y", "x_minus_y", "x_div_y", "permutation"]
AUGS = ["baseline", "reversal", "negation", "combined15", "combined30"]
FINAL_COLUMNS = ["seed", "final_train_loss", "final_train_acc", "final_val_loss",
                 "final_val_acc", "final_clean_val_acc", "val_reachable", "n_train", "n_val"]
# Synthetic knobs: how late each task and augmentation groks, how much validation leaks.
TASK_DELAY = {"x_plus_y": 0.8, "x_minus_y": 1.2, "x_div_y": 1.0, "permutation": 1.3}
AUG_DELAY = {"baseline": 1.0, "reversal": 0.95, "negation": 0.5, "combined15": 0.45,
             "combined30": 0.4}
REACHABLE = {"baseline": 0.0, "reversal": 0.5, "negation": 0.5, "combined15": 0.72,
             "combined30": 0.86}
FIGURES = ["train_curves", "augmentation_curves", "augmentation_steps_to_99",
           "augmentation_final_accuracy", "augmentation_leakage"]


def synthetic_cell(task: str, aug: str, seeds: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """History (HISTORY_COLUMNS) and final table (FINAL_COLUMNS) of one cell."""
    rng = np.random.default_rng([TASKS.index(task), AUGS.index(aug)])
    chance = 1 / 120 if task == "permutation" else 1 / 97
    t = np.arange(0, BUDGET + 1, EVAL_EVERY, dtype=float)
    histories, finals = [], []
    for seed in seeds:
        rise = lambda tau, s: chance + (1 - chance) * (0.5 + 0.5 * special.erf(s * (t - tau)))  # noqa: E731
        train = rise(40 + 5 * seed, 0.04)
        if task == "permutation" and aug != "combined15":  # never groks
            val = chance + 0.03 * t / BUDGET
        else:
            val = rise(200 * TASK_DELAY[task] * AUG_DELAY[aug] * (1 + 0.1 * seed), 0.03)
        val = np.clip(val + rng.normal(0, 0.005, t.size), 0, 1)
        reach = REACHABLE[aug] * (1 + 0.01 * seed)
        clean = np.clip(val - 0.1 * reach * (1 - val), 0, 1)  # leaked pairs are learnt first
        histories.append(pd.DataFrame({
            "seed": seed, "step": t.astype(int), "train_loss": -np.log(np.clip(train, 1e-3, 1)),
            "train_acc": train, "val_loss": -np.log(np.clip(val, 1e-3, 1)), "val_acc": val,
            "clean_val_acc": clean, "lr": 1e-3 * np.minimum(1, t / 50),
        }))
        n = 14400 if task == "permutation" else (97 * 96 if task == "x_div_y" else 97 * 97)
        finals.append({"seed": seed, "final_train_loss": -math.log(train[-1]),
                       "final_train_acc": train[-1], "final_val_loss": -math.log(val[-1]),
                       "final_val_acc": val[-1], "final_clean_val_acc": clean[-1],
                       "val_reachable": reach, "n_train": n // 2, "n_val": n - n // 2})
    return pd.concat(histories, ignore_index=True), pd.DataFrame(finals)


def write_study(root: Path, study: str, cells: list[dict[str, str]],
                make=synthetic_cell, budget: int = BUDGET) -> None:
    """models/<study>/<cell>/history.csv and reports/tables/<study>_{runs,cells}.csv."""
    runs, summaries = [], []
    for cell in cells:
        name = "-".join(cell.values())
        history, final = make(cell["task"], cell.get("aug", "baseline"), SEEDS)
        assert list(history.columns) == list(HISTORY_COLUMNS)
        assert list(final.columns) == FINAL_COLUMNS
        (root / "models" / study / name).mkdir(parents=True)
        history.to_csv(root / "models" / study / name / "history.csv", index=False)
        chance = 1 / 120 if cell["task"] == "permutation" else 1 / 97
        rows = pd.DataFrame(seed_summaries_from(history, final, budget=budget, chance=chance))
        for i, (key, value) in enumerate({"study": study, "cell": name, **cell}.items()):
            rows.insert(i, key, value)
        runs.append(rows)
        summaries.append({"study": study, "cell": name, **cell, **cell_summary(rows)})
    tables = root / "reports" / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    pd.concat(runs).to_csv(tables / f"{study}_runs.csv", index=False)
    pd.DataFrame(summaries).to_csv(tables / f"{study}_cells.csv", index=False)


def build_tree(root: Path, studies: tuple[str, ...] = ("train", "augmentation")) -> Path:
    """A fixture tree: params.yaml, references/, models/ and reports/tables/."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"].update(steps=BUDGET, eval_every=EVAL_EVERY)
    params["seeds"] = SEEDS
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "references").mkdir(parents=True)
    shutil.copy(REPO / "references" / "augmentation_paper_runs.json", root / "references")
    if "train" in studies:
        write_study(root, "train", [{"task": t} for t in TASKS])
    if "augmentation" in studies:
        write_study(root, "augmentation", [{"task": t, "aug": a} for t in TASKS for a in AUGS])
    return root


def run_report(root: Path) -> tuple[list[Path], str]:
    paths = main(["--params", str(root / "params.yaml"), "--tables", str(root / "reports/tables"),
                  "--models", str(root / "models"),
                  "--references", str(root / "references/augmentation_paper_runs.json"),
                  "--out-figures", str(root / "reports/figures"),
                  "--out-report", str(root / "reports/report.md")])
    return paths, (root / "reports" / "report.md").read_text()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], str]:
    root = build_tree(tmp_path_factory.mktemp("tree"))
    paths, text = run_report(root)
    return root, paths, text


def test_every_figure_is_a_png(report):
    root, paths, _ = report
    for name in FIGURES:
        path = root / "reports" / "figures" / f"{name}.png"
        assert path in paths
        image = mpimg.imread(path)
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500
    assert root / "reports" / "report.md" in paths


def test_report_has_sections_tables_and_links(report):
    _, _, text = report
    for header in ("# Grokking report", "## Experiment", "## Augmentation study",
                   "### Comparison with the published numbers", "### Reading"):
        assert header in text
    for task in TASKS:
        assert f"| {task} |" in text
    for name in FIGURES:
        assert f"](figures/{name}.png)" in text
    assert "p = 97" in text and f"{BUDGET} updates" in text and "seeds 0, 1, 2" in text
    assert "counted at the budget" in text and "dropped" in text


def test_report_shows_published_means_of_listed_seeds(report):
    _, _, text = report
    runs = json.loads((REPO / "references" / "augmentation_paper_runs.json").read_text())["runs"]
    for aug, task in (("combined30", "x_plus_y"), ("combined15", "permutation")):
        listed = runs[aug][task]["step_val_acc_99"]
        n = len(runs[aug][task]["final_val_acc"])
        assert f"{np.mean(listed):.0f} ({len(listed)} of {n} seeds listed)" in text
    assert "none reached (3 of 3 seeds listed at 7500)" in text  # baseline permutation
    assert "| x_plus_y | baseline |" in text and "| 2363 |" in text  # paper Table 1


def test_censored_cells_render_as_lower_bounds(report):
    _, _, text = report
    # Synthetic permutation never groks except with combined15: all seeds at the budget.
    assert f"≥ {BUDGET} (0/3 grokked)" in text


def test_missing_augmentation_tables_skip_only_that_section(tmp_path):
    root = build_tree(tmp_path, studies=("train",))
    paths, text = run_report(root)
    assert "## Experiment" in text and "| x_div_y |" in text
    section = text.split("## Augmentation study", 1)[1]
    assert "Skipped" in section and "augmentation_cells.csv" in section
    assert [p.name for p in paths] == ["train_curves.png", "report.md"]


def test_fmt_steps_marks_censoring():
    assert markdown.fmt_steps(4720.4, 4000, 5440, n_censored=0, n_seeds=3) == "4720 ± 720"
    assert markdown.fmt_steps(5200, 3000, 7400, n_censored=1, n_seeds=3) == "≥ 5200 (2/3 grokked)"
    assert markdown.fmt_steps(7500, 7500, 7500, n_censored=3, n_seeds=3) == "≥ 7500 (0/3 grokked)"
    assert markdown.fmt_steps(math.nan, math.nan, math.nan, n_censored=0, n_seeds=0) == "—"
    assert markdown.fmt_mean_ci(0.5, math.nan, math.nan, digits=2) == "0.50"


def test_cell_with_one_censored_seed_is_a_lower_bound():
    runs = pd.DataFrame({"steps_to_99": [4000, 5000, 7500], "grokked": [True, True, False],
                         "val_fit_ok": True, "train_fit_ok": True})
    cell = pd.Series(cell_summary(runs))
    assert cell["n_censored"] == 1
    assert markdown.cell_steps(cell) == "≥ 5500 (2/3 grokked)"


def test_markdown_table_escapes_and_aligns():
    df = pd.DataFrame({"name": ["a|b", None], "value": [1.5, math.nan]})
    assert markdown.markdown_table(df).splitlines() == [
        "| name | value |", "| :--- | ---: |", "| a\\|b | 1.5 |", "| — | — |"]


def test_steps_figure_hatches_censored_cells(report):
    root, _, _ = report
    cells = pd.read_csv(root / "reports" / "tables" / "augmentation_cells.csv")
    fig = figures.steps_to_99(cells, budget=BUDGET)
    hatched = [p for p in fig.axes[0].patches if p.get_hatch()]
    assert len(hatched) == int((cells["n_censored"] > 0).sum()) > 0


REAL_BUDGET = 30


def real_cell(task: str, aug: str, seeds: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A cell trained for real on a tiny configuration (seconds on a CPU)."""
    from groklab.config import RunConfig
    from groklab.train import train

    cfg = RunConfig().replace(data={"p": 13, "task": task}, model={"width": 32, "heads": 2},
                              train={"steps": REAL_BUDGET, "batch_size": 64, "aug": aug,
                                     "eval_every": EVAL_EVERY, "device": "cpu"})
    result = train(cfg, seeds)
    return result.history, result.final


@pytest.mark.slow
def test_report_from_really_trained_cells(tmp_path):
    root = build_tree(tmp_path, studies=())
    write_study(root, "train", [{"task": "x_plus_y"}], make=real_cell, budget=REAL_BUDGET)
    write_study(root, "augmentation", [{"task": "x_plus_y", "aug": a}
                                       for a in ("baseline", "combined30")],
                make=real_cell, budget=REAL_BUDGET)
    paths, text = run_report(root)
    assert len(paths) == 6 and "| x_plus_y | combined30 |" in text

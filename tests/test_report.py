"""The report stage: figures, markdown pieces and report.md from a small fixture tree.

The fixture tree has the layout the training stages write (models/<family>/<cell>/ with
history.csv, final.csv and config.json) for every trained cell of params.yaml; the
histories are synthetic (erf-shaped curves, a few seconds to build). The real `evaluate`
turns them into the tables, so the columns are exact. A slow test repeats the check on a
tree trained for real.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import shutil
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import special, stats

from groklab.cells import (
    BASELINE,
    EXPERIMENT,
    LINEAR_TASK,
    Cell,
    cell_config,
    experiment_source,
    trained_cells,
)
from groklab.params import load_params
from groklab.report import curriculum, figures, markdown, sharpness
from groklab.stages.evaluate import evaluate_all
from groklab.stages.outputs import write_json
from groklab.stages.report import main
from groklab.summary import cell_summary
from groklab.train import HISTORY_COLUMNS

REPO = Path(__file__).resolve().parents[1]
BUDGET, EVAL_EVERY, SEEDS = 300, 10, [0, 1, 2]
TASKS = ["x_plus_y", "x_minus_y", "x_div_y", "permutation"]
AUGS = ["baseline", "reversal", "negation", "combined15", "combined30"]
FINAL_COLUMNS = ["seed", "final_train_loss", "final_train_acc", "final_val_loss",
                 "final_val_acc", "final_clean_val_acc", "val_reachable", "val_in_train",
                 "n_train", "n_val"]
# Synthetic knobs: how late each task and factor value groks, how much validation leaks.
TASK_DELAY = {"x_plus_y": 0.8, "x_minus_y": 1.2, "x_div_y": 1.0, "permutation": 1.3,
              "multi_add": 0.9, "parity": 1.0}
DELAY = {
    "aug": {"baseline": 1.0, "reversal": 0.95, "negation": 0.5, "combined15": 0.45,
            "combined30": 0.4},
    "curriculum": {"none": 1.0, "linear": 0.8, "sqrt": 0.85, "step": 0.9, "random": 0.95,
                   "anti": 1.1},
    "arch": {"transformer": 1.0},
    "optimizer": {"adamw": 1.0, "adamw_fullbatch": 0.9, "sgd_nesterov": 1.15, "dropout": 0.85,
                  "wd_0.05": 1.2, "wd_1.0": 0.8},
    "train_fraction": {0.1: 1.2, 0.3: 1.05, 0.45: 0.95, 0.5: 1.0, 0.6: 0.8, 0.8: 0.6},
    "batch_size": {64: 1.2, 128: 1.0, 512: 1.0},
    "operands": {2: 0.7, 3: 1.1},
}
# Cells that never grok: (factor, value) or (factor, value, task).
NEVER = {("aug", "permutation"), ("curriculum", "permutation"), ("arch", "mlp"),
         ("arch", "lstm"), ("optimizer", "adam"), ("train_fraction", 0.05)}
REACHABLE = {"baseline": 0.0, "reversal": 0.5, "negation": 0.5, "combined15": 0.72,
             "combined30": 0.86}
LAMS = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
FIGURES = [
    "experiment_curves", "augmentation_curves", "augmentation_steps_to_99",
    "augmentation_final_accuracy", "augmentation_leakage", "curriculum_steps_to_99",
    "curriculum_final_accuracy", "curriculum_curves", "architecture_steps_to_99",
    "architecture_curves", "optimizer_steps_to_99", "optimizer_curves",
    "data_fraction_trends", "data_fraction_curves", "batch_size_trends", "batch_size_curves",
    "multivariate_curves", "concealment_gap", "concealment_sharpness", "concealment_curves",
    "linear_teacher_sharpness", "linear_teacher_curves", "modular_sharpness",
]
SECTIONS = ["## Experiment", "## Augmentation study", "## Curriculum study",
            "## Architecture study", "## Optimizer study", "## Data-fraction study",
            "## Batch-size study", "## Multivariate study", "## Concealment study",
            "## Linear student-teacher study", "## Sharpness across all modular-arithmetic runs"]


def _never(factor: str, value, task: str) -> bool:
    if factor in ("aug", "curriculum") and task == "permutation":
        # Permutation groks only with combined15 / linear, as in the papers' runs.
        return value not in ("combined15", "linear")
    return (factor, value) in NEVER


def synthetic_cell(task: str, factor: str, value, seeds: list[int]
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """History (HISTORY_COLUMNS) and final table (FINAL_COLUMNS) of one cell."""
    rng = np.random.default_rng(sum(map(ord, f"{task}/{factor}/{value}")))
    chance = 0.5 if task == "parity" else 1 / 120 if task == "permutation" else 1 / 97
    t = np.arange(0, BUDGET + 1, EVAL_EVERY, dtype=float)
    histories, finals = [], []
    for seed in seeds:
        def rise(tau, s):
            return chance + (1 - chance) * (0.5 + 0.5 * special.erf(s * (t - tau)))
        train = rise(40 + 5 * seed, 0.04)
        if _never(factor, value, task):
            val = chance + 0.03 * t / BUDGET
        elif factor == "concealed_bits":  # more concealed bits: later and softer (seed 004)
            val = rise((60 + 5 * value) * (1 + 0.1 * seed), 0.06 / (1 + 0.08 * value))
        else:
            delay = TASK_DELAY[task] * DELAY[factor].get(value, 1.0)
            val = rise(200 * delay * (1 + 0.1 * seed), 0.03)
        val = np.clip(val + rng.normal(0, 0.005, t.size), 0, 1)
        reach = REACHABLE.get(value, 0.0) * (1 + 0.01 * seed) if factor == "aug" else 0.0
        clean = np.clip(val - 0.1 * reach * (1 - val), 0, 1)  # leaked pairs are learnt first
        histories.append(pd.DataFrame({
            "seed": seed, "step": t.astype(int), "train_loss": -np.log(np.clip(train, 1e-3, 1)),
            "train_acc": train, "batch_loss": -np.log(np.clip(train, 1e-3, 1)),
            "batch_acc": train, "val_loss": -np.log(np.clip(val, 1e-3, 1)), "val_acc": val,
            "clean_val_acc": clean, "lr": 1e-3 * np.minimum(1, t / 50),
        }))
        n = {"permutation": 14400, "x_div_y": 97 * 96, "parity": 1000,
             "multi_add": 23 ** (value if factor == "operands" else 2)}.get(task, 97 * 97)
        finals.append({"seed": seed, "final_train_loss": -math.log(train[-1]),
                       "final_train_acc": train[-1], "final_val_loss": -math.log(val[-1]),
                       "final_val_acc": val[-1], "final_clean_val_acc": clean[-1],
                       "val_reachable": reach, "val_in_train": 0.0, "n_train": n // 2,
                       "n_val": n - n // 2})
    return pd.concat(histories, ignore_index=True), pd.DataFrame(finals)


def write_cell(root: Path, params: dict, cell: Cell, factor: str, value, make) -> None:
    """models/<family>/<name>/: history.csv, final.csv and config.json of one cell."""
    out = cell.path(root / "models")
    out.mkdir(parents=True)
    config = cell_config(params, cell)
    seeds = SEEDS
    if cell.task == LINEAR_TASK:
        history, final = synthetic_linear(value, SEEDS)
        kind = "linear_teacher"
    elif make is not None:
        history, final = make(config)
        seeds, kind = sorted(history.seed.unique().tolist()), "network"
    else:
        history, final = synthetic_cell(cell.task, factor, value, SEEDS)
    if cell.task != LINEAR_TASK:
        assert list(history.columns) == list(HISTORY_COLUMNS)
        assert list(final.columns) == FINAL_COLUMNS
        kind = "network"
    history.to_csv(out / "history.csv", index=False)
    final.to_csv(out / "final.csv", index=False)
    write_json(out / "config.json", {"kind": kind, "config": dataclasses.asdict(config),
                                     "seeds": seeds, "steps_done": BUDGET})


def write_models(root: Path, params: dict, make=None) -> None:
    """Every trained cell of ``params``, and the experiment's pointer to its base run."""
    for cell in trained_cells(params):
        if cell.family == BASELINE:
            factor, value = "aug", "baseline"
        else:
            spec = params["studies"][cell.family]
            factor, value = spec["factor"].split(".")[-1], cell.value
        write_cell(root, params, cell, factor, value, make)
    for task in params["tasks"]:
        source = experiment_source(params, task)
        exp = Cell(EXPERIMENT, task)
        if source is None:
            write_cell(root, params, exp, "aug", params["aug"], make)
        else:
            exp.path(root / "models").mkdir(parents=True)
            write_json(exp.path(root / "models") / "source.json",
                       {"stage": source.stage, "family": source.family, "name": source.name})


def synthetic_linear(lam: float, seeds: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Log-time erf curves whose gap grows and sharpness falls as lam -> 1 (seed 004)."""
    steps = np.unique(np.round(np.geomspace(1, 1e5, 60))).astype(int)
    x = np.log10(steps)
    histories, finals = [], []
    for seed in seeds:
        g = 0.2 / (1 - lam) * (1 + 0.03 * seed)
        train = 0.5 + 0.5 * special.erf(2 * (x - 3))
        val = 0.5 + 0.5 * special.erf(2 * g ** -0.5 * (x - 3 - 0.3 * g))
        if lam == 0.95 and seed == 2:  # one flat validation curve: a failed fit to count
            val = np.full_like(x, 0.02)
        h = pd.DataFrame({"seed": seed, "step": steps, "train_loss": 10.0 ** -x,
                          "train_acc": train, "val_loss": 10.0 ** (-x / (1 + g)),
                          "val_acc": val})
        histories.append(h)
        finals.append({"seed": seed, **{f"final_{k}": h[k].iloc[-1] for k in
                                        ("train_loss", "train_acc", "val_loss", "val_acc")},
                       "n_train": 1000})
    return pd.concat(histories, ignore_index=True), pd.DataFrame(finals)


def build_tree(root: Path, studies: tuple[str, ...] | None = None, make=None,
               edit=None) -> Path:
    """A fixture tree: params.yaml, references/, models/ and reports/ as `evaluate` writes
    it; ``studies`` (default all) keeps only those studies' tables; ``edit`` changes the
    params first; ``make`` (a config -> history, final function) trains cells for real."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"].update(steps=BUDGET, eval_every=EVAL_EVERY)
    params["seeds"] = SEEDS
    if edit is not None:
        edit(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    params = load_params(root / "params.yaml")
    (root / "references").mkdir(parents=True)
    for name in ("augmentation_paper_runs.json", "curriculum_paper_tables.json"):
        shutil.copy(REPO / "references" / name, root / "references")
    write_models(root, params, make)
    evaluate_all(params, root / "models", root / "reports")
    if studies is not None:
        for path in (root / "reports" / "tables").glob("*.csv"):
            if path.stem.rsplit("_", 1)[0] not in (*studies, BASELINE):
                path.unlink()
    return root


def run_report(root: Path) -> tuple[list[Path], str]:
    paths = main(["--params", str(root / "params.yaml"), "--tables", str(root / "reports/tables"),
                  "--models", str(root / "models"),
                  "--references", str(root / "references/augmentation_paper_runs.json"),
                  "--out-figures", str(root / "reports/figures"),
                  "--out-report", str(root / "reports/report.md")])
    return paths, (root / "reports" / "report.md").read_text()


def section(text: str, header: str) -> str:
    """The markdown from ``header`` to the next level-2 header."""
    return text.split(header + "\n", 1)[1].split("\n## ", 1)[0]


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
    assert len(paths) == len(FIGURES) + 1


def test_report_has_every_section_in_order_with_its_figures(report):
    _, _, text = report
    positions = [text.index(f"\n{header}\n") for header in SECTIONS]
    assert positions == sorted(positions)
    for header in SECTIONS[1:]:  # the experiment has its table and curves, no reading
        body = section(text, header)
        assert "### Reading" in body and "Skipped" not in body, header
    for name in FIGURES:
        assert f"](figures/{name}.png)" in text
    for task in TASKS:
        assert f"| {task} |" in text
    assert "p = 97" in text and f"{BUDGET} updates" in text and "seeds 0, 1, 2" in text
    assert "counted at the budget" in text and "dropped" in text


def test_sections_state_what_varied_and_what_was_held_fixed(report):
    _, _, text = report
    for header, factor in (("## Curriculum study", "train.curriculum"), ("## Optimizer study",
                           "train.optimizer"), ("## Concealment study", "data.concealed_bits"),
                           ("## Multivariate study", "data.operands")):
        body = section(text, header)
        assert f"**Varied:** `{factor}`" in body and "**Held fixed:**" in body
    multi = section(text, "## Multivariate study")
    assert "p = 23" in multi and "K = 3" in multi and "23 ** 3" not in multi
    assert "12167 equations" in multi  # 23^3
    conceal = section(text, "## Concealment study")
    assert "parity of 3 bits" in conceal and "sgd" in conceal and "bit_mlp" in conceal
    fraction = section(text, "## Data-fraction study")
    assert "fraction 0.05 runs at p = 113" in fraction and "seed 002 saw none: agrees" in fraction


def test_report_shows_published_means_of_listed_seeds(report):
    _, _, text = report
    runs = json.loads((REPO / "references" / "augmentation_paper_runs.json").read_text())["runs"]
    for aug, task in (("combined30", "x_plus_y"), ("combined15", "permutation")):
        listed = runs[aug][task]["step_val_acc_99"]
        n = len(runs[aug][task]["final_val_acc"])
        assert f"{np.mean(listed):.0f} ({len(listed)} of {n} seeds listed)" in text
    assert "none reached (3 of 3 seeds listed at 7500)" in text  # baseline permutation
    assert "| x_plus_y | baseline |" in text and "| 2363 |" in text  # paper Table 1


def test_curriculum_section_has_the_papers_tables_and_their_contradictions(report):
    _, _, text = report
    body = section(text, "## Curriculum study")
    paper = json.loads((REPO / "references" / "curriculum_paper_tables.json").read_text())
    for table in paper["tables"].values():
        for row in table["rows"].values():
            for value in row.values():
                assert curriculum.paper_number(value) in body, value
    for literal in ("0.0176595", "7.19393", "0.973958", "0.0159", "0.0259", "0.0359"):
        assert literal in body
    assert "| Full method | `linear` |" in body and "`random`" in body and "`none`" in body
    assert "sqrt pacing" in body and "step pacing" in body
    assert "Table 3's final *training* accuracy" in body  # 0.9739 in the text
    assert "does not name its task" in body and "exceeds ln 120" in body


def test_batch_size_counts_examples_seen(report):
    root, _, text = report
    cells = pd.read_csv(root / "reports" / "tables" / "batch_size_cells.csv")
    body = section(text, "## Batch-size study")
    for _, c in cells.iterrows():
        steps = markdown.cell_steps(c)
        examples = markdown.fmt_steps(c["steps_to_99_mean"] * c["batch_size"],
                                      c["steps_to_99_ci_low"] * c["batch_size"],
                                      c["steps_to_99_ci_high"] * c["batch_size"],
                                      n_censored=int(c["n_censored"]),
                                      n_seeds=int(c["n_seeds"]))
        assert f"| {steps} |" in body and f"| {examples} |" in body


def test_sharpness_sections_report_the_loglog_fit(report):
    root, _, text = report
    runs = pd.read_csv(root / "reports" / "tables" / "concealment_runs.csv")
    fit = sharpness.loglog_fit(runs["relative_gap"], runs["relative_sharpness"])
    body = section(text, "## Concealment study")
    assert f"| {fit.slope:.3g} |" in body and f"| {fit.r:.3f} |" in body
    assert fit.slope < 0  # synthetic: softer transitions with more concealed bits
    modular = section(text, "## Sharpness across all modular-arithmetic runs")
    # Each trained modular-arithmetic run once: the folders under models/ times their seeds,
    # however many studies read a base run.
    n = sum(len(json.loads(p.read_text())["seeds"])
            for p in (root / "models").glob("*/*/config.json")
            if json.loads(p.read_text())["config"].get("data", {}).get("task")
            not in (None, "parity"))
    assert n == 3 * (4 + 16 + 20 + 4 + 6 + 6 + 2 + 2)
    assert f"{n} distinct runs" in modular and "flat curve" in modular
    lt = section(text, "## Linear student-teacher study")
    assert "flat curve (1)" in lt  # the one failed synthetic fit, by reason


def test_missing_studies_skip_only_their_sections(tmp_path):
    root = build_tree(tmp_path, studies=("experiment", "concealment"))
    paths, text = run_report(root)
    assert "## Experiment" in text and "| x_div_y |" in text
    for header, study in (("## Augmentation study", "augmentation"),
                          ("## Curriculum study", "curriculum"),
                          ("## Linear student-teacher study", "linear_teacher")):
        body = section(text, header)
        assert "Skipped" in body and f"{study}_cells.csv" in body and "###" not in body
    assert "Skipped" not in section(text, "## Concealment study")
    assert sorted(p.name for p in paths) == sorted(
        ["experiment_curves.png", "concealment_gap.png", "concealment_sharpness.png",
         "concealment_curves.png", "modular_sharpness.png", "report.md"])


def test_loglog_fit_recovers_a_power_law():
    rng = np.random.default_rng(0)
    x = np.geomspace(0.1, 100, 60)
    y = 3 * x ** -0.5 * np.exp(rng.normal(0, 0.05, x.size))
    fit = sharpness.loglog_fit(x, y)
    slope, intercept = np.polyfit(np.log10(x), np.log10(y), 1)
    r, _ = stats.pearsonr(np.log10(x), np.log10(y))
    assert fit.slope == pytest.approx(slope) and fit.intercept == pytest.approx(intercept)
    assert fit.r == pytest.approx(r)
    assert fit.slope == pytest.approx(-0.5, abs=0.03)
    assert fit.intercept == pytest.approx(math.log10(3), abs=0.03)
    assert fit.r < -0.99 and fit.n == 60 and fit.n_nonpositive == fit.n_missing == 0


def test_loglog_fit_excludes_and_counts_nonpositive_points():
    rng = np.random.default_rng(1)
    x = np.geomspace(0.5, 50, 20)
    y = 3 * x ** -0.5 * np.exp(rng.normal(0, 0.05, x.size))
    clean = sharpness.loglog_fit(x, y)
    bad_x = np.append(x, [0.0, -1.0, 2.0, math.nan])
    bad_y = np.append(y, [1.0, 1.0, -2.0, 1.0])
    fit = sharpness.loglog_fit(bad_x, bad_y)
    assert (fit.n, fit.n_nonpositive, fit.n_missing) == (20, 3, 1)
    assert (fit.slope, fit.intercept, fit.r) == pytest.approx(
        (clean.slope, clean.intercept, clean.r))
    few = sharpness.loglog_fit([1.0, 2.0, -1.0], [1.0, 2.0, 3.0])
    assert not few.ok and few.n == 2 and few.n_nonpositive == 1


def test_censored_cells_render_as_lower_bounds(report):
    _, _, text = report
    # Synthetic permutation never groks except with combined15: all seeds at the budget.
    assert f"≥ {BUDGET} (0/3 grokked)" in text


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


def real_cell(config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cell trained for real on its (tiny) configuration: seconds on a CPU."""
    from groklab.train import train

    result = train(config, SEEDS[:1])
    return result.history, result.final


@pytest.mark.slow
def test_report_from_really_trained_cells(tmp_path):
    def tiny(params):
        params.update(tasks=["x_plus_y"], baseline={"tasks": ["x_plus_y"]})
        params["data"]["p"] = 13
        params["model"].update(width=32, heads=2)
        params["train"].update(steps=30, batch_size=64, eval_every=10)
        params["studies"] = {"augmentation": {**params["studies"]["augmentation"],
                                              "tasks": ["x_plus_y"], "values": ["combined30"]}}
    root = build_tree(tmp_path, edit=tiny, make=real_cell)
    paths, text = run_report(root)
    assert "| x_plus_y | combined30 |" in text and "## Augmentation study" in text
    assert "_Skipped" in text  # studies without tables say so


def test_sharpness_figures_and_tables_survive_runs_without_positive_points():
    runs = pd.DataFrame({"study": "s", "relative_gap": [math.nan, -0.2, 0.0],
                         "relative_sharpness": [math.nan, 0.5, 0.7],
                         "absolute_sharpness": [math.nan, 0.01, 0.02],
                         "train_fit_ok": [False, True, True], "val_fit_ok": [False, True, True],
                         "train_fit_reason": ["flat curve: rises by 0.01", "", ""],
                         "val_fit_reason": ["poor fit: R^2=0.1 < min_r2=0.9", "", ""]})
    fig = sharpness.sharpness_panels(runs, hue="study")
    assert len(fig.axes) == 4
    for figure in (fig, sharpness.sharpness_vs_gap(runs, hue=None, log=True)):
        figure.savefig(io.BytesIO(), format="png")  # drawing is where log axes would fail
    table = sharpness.fit_table(runs)
    assert "| relative sharpness | 3 | 0 | 2 | 1 | — |" in table
    failures = sharpness.fit_failure_table(runs)
    assert "flat curve (1)" in failures and "poor fit (1)" in failures

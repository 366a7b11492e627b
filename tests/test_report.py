"""The report stage: figures, markdown pieces and report.md from a small fixture tree.

The fixture tree has the layout the training stages write (models/<family>/<cell>/ with
history.csv, final.csv and config.json) for every trained cell of params.yaml; the
histories are synthetic (erf-shaped curves, a few seconds to build). The real `evaluate`
turns them into the tables, so the columns are exact. The tests check the numbers in the
tables, the report and the figures against independent computations on those histories; a
slow test repeats the check on a tree trained for real.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import math
import re
import shutil
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.text import Text
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
from groklab.report import (
    architecture,
    batch_size,
    curriculum,
    data_fraction,
    multivariate,
    plots,
    sections,
    sharpness,
    study,
)
from groklab.report import text as tx
from groklab.stages.evaluate import evaluate_all
from groklab.stages.outputs import write_json
from groklab.stages.report import DPI, build_report, main
from groklab.summary import HEADLINE, cell_summary
from groklab.train import HISTORY_COLUMNS

REPO = Path(__file__).resolve().parents[1]
BUDGET, EVAL_EVERY, SEEDS = 300, 10, [0, 1, 2]
GROK_DELAY = 100  # analysis.grok_delay at this budget: x_plus_y's base run groks, combined30
COLLAPSE_AT = 260  # multi_add K = 3 reaches 99%, then falls to 0.44 here (a known real case)
TASKS = ["x_plus_y", "x_minus_y", "x_div_y", "permutation"]
AUGS = ["baseline", "reversal", "negation", "combined15", "combined30"]
FINAL_COLUMNS = ["seed", "final_train_loss", "final_train_acc", "final_val_loss",
                 "final_val_acc", "final_clean_val_acc", "val_reachable", "val_in_train",
                 "n_train", "n_val"]
# Synthetic knobs: how late each task and factor value groks, how much validation leaks.
TASK_DELAY = {"x_plus_y": 0.8, "x_minus_y": 1.2, "x_div_y": 1.0, "permutation": 1.3,
              "multi_add": 0.9, "parity": 1.0, "x_mul_y": 1.0}
DELAY = {
    "aug": {"baseline": 1.0, "reversal": 0.95, "negation": 0.5, "combined15": 0.45,
            "combined30": 0.4},
    "curriculum": {"none": 1.0, "linear": 0.8, "sqrt": 0.85, "step": 0.9, "random": 0.95,
                   "anti": 1.1},
    "arch": {"transformer": 1.0},
    "optimizer": {"adamw": 1.0, "adamw_fullbatch": 0.9, "sgd_nesterov": 1.15, "dropout": 0.85,
                  "wd_0p05": 1.2, "wd_1p0": 0.8, "adamw_nowd": 1.4, "grokfast_ema": 0.3,
                  "grokfast_ema_lr": 0.8, "grokfast_ma": 0.25, "grokfast_ma_lr": 0.7,
                  "stablemax": 1.2, "orthograd": 0.5},
    "train_fraction": {0.1: 1.2, 0.3: 1.05, 0.45: 0.95, 0.5: 1.0, 0.6: 0.8, 0.8: 0.6},
    "batch_size": {64: 1.2, 128: 1.0, 512: 1.0},
    "operands": {2: 0.7, 3: 1.1},
}
# Cells that never grok: (factor, value) or (factor, value, task).
NEVER = {("aug", "permutation"), ("curriculum", "permutation"), ("arch", "mlp"),
         ("arch", "lstm"), ("optimizer", "adam"), ("train_fraction", 0.05)}
REACHABLE = {"baseline": 0.0, "reversal": 0.5, "negation": 0.5, "combined15": 0.72,
             "combined30": 0.86}
EVERY_PAIR = ("permutation", "combined30")  # every validation pair reachable: no clean pair
LAMS = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
FIGURES = [
    "experiment_curves", "augmentation_curves", "augmentation_steps_to_99",
    "augmentation_final_accuracy", "augmentation_leakage", "augmentation_fraction_reached",
    "curriculum_steps_to_99", "curriculum_fraction_reached",
    "curriculum_final_accuracy", "curriculum_curves", "architecture_steps_to_99",
    "architecture_curves", "optimizer_steps_to_99", "optimizer_curves",
    "data_fraction_trends", "data_fraction_curves", "batch_size_trends", "batch_size_curves",
    "multivariate_curves", "concealment_gap", "concealment_sharpness", "concealment_curves",
    "accelerators_fraction_reached", "accelerators_curves",
    "linear_teacher_sharpness", "linear_teacher_curves", "modular_sharpness",
]
SECTIONS = ["## Experiment", "## Augmentation study", "## Curriculum study",
            "## Architecture study", "## Optimizer study", "## Data-fraction study",
            "## Batch-size study", "## Multivariate study", "## Concealment study",
            "## Accelerators study", "## Linear student-teacher study",
            "## Sharpness across all modular-arithmetic runs"]


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
        elif factor == "concealed_bits":  # more bits: later and softer (sharpness paper)
            val = rise((60 + 5 * value) * (1 + 0.1 * seed), 0.06 / (1 + 0.08 * value))
        else:
            delay = TASK_DELAY[task] * DELAY[factor].get(value, 1.0)
            val = rise(200 * delay * (1 + 0.1 * seed), 0.03)
        val = np.clip(val + rng.normal(0, 0.005, t.size), 0, 1)
        if (factor, value) == ("operands", 3):  # grokked, then fell back
            val = np.where(t >= COLLAPSE_AT, 0.44, np.maximum(val, 0.995 * (t >= 200)))
        reach = REACHABLE.get(value, 0.0) * (1 + 0.01 * seed) if factor == "aug" else 0.0
        clean = np.clip(val - 0.1 * reach * (1 - val), 0, 1)  # leaked pairs are learnt first
        if (task, value) == EVERY_PAIR:
            reach, clean = 1.0, np.full(t.size, np.nan)
        histories.append(pd.DataFrame({
            "seed": seed, "step": t.astype(int), "train_loss": -np.log(np.clip(train, 1e-3, 1)),
            "train_acc": train, "batch_loss": -np.log(np.clip(train, 1e-3, 1)),
            "batch_acc": train, "val_loss": -np.log(np.clip(val, 1e-3, 1)), "val_acc": val,
            "clean_val_acc": clean, "lr": 1e-3 * np.minimum(1, t / 50),
            "softmax_collapse": np.zeros(t.size),
        }))
        n = {"permutation": 14400, "x_div_y": 97 * 96, "x_mul_y": 97 * 96, "parity": 1000,
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
    """Log-time erf curves whose gap grows and sharpness falls as lam -> 1 (the sharpness paper)."""
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
    params["analysis"]["grok_delay"] = GROK_DELAY
    if edit is not None:
        edit(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    params = load_params(root / "params.yaml")
    shutil.copytree(REPO / "references", root / "references")
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
                  "--references", str(root / "references"),
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


@pytest.fixture(scope="module")
def drawn(report) -> dict:
    """The report's figures as objects (built again from the same tables)."""
    root = report[0]
    _, figs = build_report(load_params(root / "params.yaml"), root / "reports/tables",
                           root / "models", root / "references")
    return figs


def tables(root: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(root / "reports" / "tables" / f"{name}.csv")


def histories(root: Path, runs: pd.DataFrame) -> dict[tuple[str, int], pd.DataFrame]:
    """Each run's history, read from its folder (``path``), by (path, seed)."""
    out = {}
    for path in runs["path"].unique():
        h = pd.read_csv(root / "models" / path / "history.csv")
        out.update({(path, int(seed)): g for seed, g in h.groupby("seed")})
    return out


def first_step(h: pd.DataFrame, col: str, level: float = 0.99) -> int | None:
    """Plain Python: the first evaluated step with ``col >= level``."""
    for step, acc in zip(h["step"], h[col], strict=True):
        if acc >= level:
            return int(step)
    return None


def md_rows(text: str, first: str) -> list[list[str]]:
    """The cells of every markdown table row whose first cell is ``first``."""
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith(f"| {first} |")]


# --- Files and structure ---------------------------------------------------------------------


def test_every_figure_is_a_png(report, drawn):
    """Each PNG is its figure: the same pixels as the figure built again from the tables and
    rendered here, and not blank (the data's colours are in it, not only white and text)."""
    root, paths, _ = report
    for name in FIGURES:
        path = root / "reports" / "figures" / f"{name}.png"
        assert path in paths
        image = mpimg.imread(path)
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500
        buffer = io.BytesIO()
        drawn[name].savefig(buffer, format="png", dpi=DPI)
        buffer.seek(0)
        np.testing.assert_array_equal(image, mpimg.imread(buffer, format="png"), err_msg=name)
        rgb = image[..., :3].reshape(-1, 3)
        grey = np.abs(rgb - rgb.mean(axis=1, keepdims=True)).max(axis=1) < 0.02
        assert (~grey).mean() > 0.002, name  # coloured data marks, not an empty frame
    assert root / "reports" / "report.md" in paths
    assert len(paths) == len(FIGURES) + 1


def test_sections_are_discovered_and_follow_params_order(report):
    _, _, text = report
    positions = [text.index(f"\n{header}\n") for header in SECTIONS]
    assert positions == sorted(positions)
    for name in FIGURES:
        assert f"](figures/{name}.png)" in text
    params = load_params(REPO / "params.yaml")
    declared = list(params["studies"])
    assert [s.study for s in sections.ordered(params)] == ["experiment", *declared, None]
    flipped = {**params, "studies": dict(reversed(list(params["studies"].items())))}
    assert [s.study for s in sections.ordered(flipped)] == ["experiment", *declared[::-1],
                                                            None]
    fewer = {**params, "studies": {k: params["studies"][k] for k in declared[:2]}}
    assert [s.study for s in sections.ordered(fewer)] == ["experiment", *declared[:2], None]


# --- Numbers: grokking, collapse, censoring, missing values -----------------------------------


def test_groks_is_validation_reaching_99_the_delay_after_training(report):
    root, _, text = report
    runs = tables(root, "augmentation_runs")
    seen = set()
    for (path, seed), h in histories(root, runs).items():
        row = runs[(runs["path"] == path) & (runs["seed"] == seed)].iloc[0]
        train, val = first_step(h, "train_acc"), first_step(h, "val_acc")
        expected = train is not None and val is not None and val - train >= GROK_DELAY
        assert bool(row["groks"]) == expected, (path, seed, train, val)
        if train is not None and val is not None:
            assert row["grok_delay_steps"] == val - train
        seen.add(expected)
    assert seen == {True, False}  # the fixture has both kinds
    cells = tables(root, "augmentation_cells")
    for _, c in cells.iterrows():
        mine = runs[runs["cell"] == c["cell"]]
        assert c["frac_groks"] == pytest.approx(mine["groks"].mean())
        row = md_rows(section(text, "## Augmentation study"), c["task"])
        assert row  # the pivot and tables list every task
    table = section(text, "## Architecture study")
    for _, c in tables(root, "architecture_cells").iterrows():
        (row,) = [r for r in md_rows(table, c["task"]) if r[1] == c["arch"]]
        assert row[4] == f"{int(c['n_groks'])}/3"  # the `groks` column


def test_collapsed_runs_are_flagged_counted_and_named(report):
    root, _, text = report
    runs = tables(root, "multivariate_runs")
    for (path, seed), h in histories(root, runs).items():
        row = runs[(runs["path"] == path) & (runs["seed"] == seed)].iloc[0]
        hit = first_step(h, "val_acc")
        later = h[(h["step"] > (hit or 1e9)) & (h["val_acc"] < 0.9)]["step"]
        assert bool(row["collapsed"]) == (len(later) > 0)
        if len(later):
            assert row["collapse_step"] == later.min() == COLLAPSE_AT
    cells = tables(root, "multivariate_cells").set_index("operands")
    assert (cells.loc[3, "n_collapsed"], cells.loc[2, "n_collapsed"]) == (3, 0)
    body = section(text, "## Multivariate study")
    collapsed = runs[runs["collapsed"]]
    for r in collapsed.itertuples():
        assert f"{r.seed} (99% at {r.steps_to_99}, below at {COLLAPSE_AT}, final 0.44)" in body


def test_a_three_seed_report_says_how_its_intervals_are_made(report):
    _, _, text = report  # the one-seed wording is test_a_first_look_report_knows_its_scale's
    assert "mean ± half-width of the 95% interval over seeds" in text
    assert "(intervals in the table above)" in text and "one seed, so no interval" not in text


def test_collapse_note_keeps_collapses_dips_and_runs_stopped_below_apart():
    runs = pd.DataFrame({
        "cell": ["a", "b", "c", "d"], "seed": [0, 1, 2, 3],
        "steps_to_99": [700, 800, 900, 1000], "collapse_step": [760, 850, 950, float("nan")],
        "final_val_acc": [0.44, 0.84, 0.99, 1.0],
        "collapsed": [True, False, False, False], "stopped_below": [False, True, False, False],
        "dipped": [False, False, True, False]})
    note = study.collapse_note(runs, 0.9)
    collapsed, rest = note.split("Stopped below 0.9")
    stopped, dips = rest.split("Transient dips")
    assert "`a` seed 0 (99% at 700, below at 760, final 0.44)" in collapsed
    assert "`b` seed 1 (99% at 800, below at 850, final 0.84)" in stopped
    assert "cannot be told apart" in stopped and "`b`" not in collapsed + dips
    assert "`c` seed 2 (99% at 900, below at 950, final 0.99)" in dips
    assert "`d`" not in note
    quiet = study.collapse_note(runs.iloc[3:], 0.9)
    assert quiet.startswith("No run collapsed") and "Stopped" not in quiet


def test_censored_cells_have_no_interval_anywhere(report):
    root, _, text = report
    for family in ("augmentation", "curriculum", "architecture", "optimizer"):
        cells = tables(root, f"{family}_cells")
        censored = cells["n_censored"] > 0
        assert censored.any() and (~censored).any()
        assert cells.loc[censored, ["steps_to_99_ci_low", "steps_to_99_ci_high"]].isna().all().all()
        assert cells.loc[~censored, "steps_to_99_ci_low"].notna().all()
        files = sorted((root / "reports" / "metrics" / family).glob("*.json"))
        assert sorted(p.stem for p in files) == sorted(cells["cell"])  # one file per cell
        for path in files:
            metrics = json.loads(path.read_text())
            assert set(metrics) <= set(HEADLINE) and "ci_low" not in json.dumps(metrics)
    assert f"≥ {BUDGET} (0/3 reached)" in text
    assert f"≥ {BUDGET} (0/3 reached) ±" not in text


def test_missing_clean_accuracy_stays_missing(report):
    root, _, text = report
    runs = tables(root, "augmentation_runs")
    every = runs[(runs["task"] == EVERY_PAIR[0]) & (runs["aug"] == EVERY_PAIR[1])]
    assert every["clean_val_acc"].isna().all() and (every["val_reachable"] == 1.0).all()
    assert (~every["clean_fit_ok"]).all()
    cells = tables(root, "augmentation_cells").set_index("cell")
    assert math.isnan(cells.loc["permutation-combined30", "clean_val_acc_mean"])
    some = cells.loc["x_plus_y-combined30", "clean_val_acc_mean"]
    assert some == pytest.approx(runs[runs["cell"] == "x_plus_y-combined30"][
        "clean_val_acc"].mean())
    # The DVC metrics: no clean accuracy where no pair is clean, with val_reachable beside
    # it; elsewhere the mean over seeds, steps to 99% counting a censored seed at the budget.
    def metrics(cell: str) -> dict:
        return json.loads((root / f"reports/metrics/augmentation/{cell}.json").read_text())

    assert "clean_val_acc" not in metrics("permutation-combined30")
    assert metrics("permutation-combined30")["val_reachable"] == 1.0
    mine = runs[runs["cell"] == "x_plus_y-combined30"]
    shown = metrics("x_plus_y-combined30")
    assert shown["clean_val_acc"] == pytest.approx(mine["clean_val_acc"].mean(), abs=1e-6)
    steps = [s if g else BUDGET for s, g in zip(mine["steps_to_99"], mine["grokked"],
                                                strict=True)]
    assert shown["steps_to_99"] == pytest.approx(sum(steps) / len(steps), abs=1e-6)
    leak = section(section(text, "## Augmentation study"), "### Final accuracy and leakage")
    (row,) = [r for r in md_rows(leak, "permutation") if r[1] == "combined30"]
    assert row[2] == "1.000" and row[4] == tx.DASH and row[5] == tx.DASH


# --- Each cell against its default ------------------------------------------------------------


def _scipy_logrank_z(t, e, in_a):
    """scipy's log-rank z; 0 where it is undefined (no event: no evidence either way)."""
    if not e.any():
        return 0.0
    a = stats.CensoredData.right_censored(t[in_a], ~e[in_a])
    b = stats.CensoredData.right_censored(t[~in_a], ~e[~in_a])
    return stats.logrank(a, b).statistic


def _t_interval(cell: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """Pooled two-sample Student t 95% interval of exp(mean log cell - mean log ref)."""
    la, lb = np.log(cell), np.log(ref)
    df = la.size + lb.size - 2
    s2 = (((la - la.mean()) ** 2).sum() + ((lb - lb.mean()) ** 2).sum()) / df
    half = stats.t.ppf(0.975, df) * math.sqrt(s2 * (1 / la.size + 1 / lb.size))
    d = la.mean() - lb.mean()
    return math.exp(d), math.exp(d - half), math.exp(d + half)


@pytest.mark.parametrize("name, factor, default, header", [
    ("curriculum", "curriculum", "none", "## Curriculum study"),
    ("augmentation", "aug", "baseline", "## Augmentation study"),
])
def test_comparisons_match_an_independent_log_rank_test(report, name, factor, default, header):
    """Per task: the exact log-rank p and its floor by brute force over scipy's z, the time
    ratio against the t interval on log times where no seed is censored, and the verdict of
    the test that can decide (at 3 vs 3 the log-rank's floor is 0.1: the time ratio). The
    synthetic combined30 reaches 99% in about 0.4 of the baseline's updates: some row must
    be called faster, so that branch is checked too."""
    root, _, text = report
    runs = tables(root, f"{name}_runs")
    versus = tables(root, f"{name}_comparisons")
    assert len(versus) == len(runs["cell"].unique()) - 4  # every cell but the 4 defaults
    decided = set()
    for _, v in versus.iterrows():
        cell = runs[(runs["task"] == v["task"]) & (runs[factor] == v["value"])]
        ref = runs[(runs["task"] == v["task"]) & (runs[factor] == default)]
        t = np.concatenate([cell["steps_to_99"], ref["steps_to_99"]]).astype(float)
        e = np.concatenate([cell["grokked"], ref["grokked"]]).astype(bool)
        in_a = np.arange(6) < 3
        z = _scipy_logrank_z(t, e, in_a)
        zs = np.array([abs(_scipy_logrank_z(t, e, np.isin(np.arange(6), c)))
                       for c in itertools.combinations(range(6), 3)])
        p = np.mean(zs >= abs(z) - 1e-9)
        assert v["logrank_z"] == pytest.approx(z) and v["logrank_p"] == pytest.approx(p)
        assert v["logrank_method"] == "exact permutation"
        assert v["logrank_floor"] == pytest.approx(np.mean(zs >= zs.max() - 1e-9))
        assert v["median"] - v["median_reference"] == pytest.approx(
            np.median(cell["steps_to_99"]) - np.median(ref["steps_to_99"]))
        if e.all():
            ratio, lo, hi = _t_interval(t[:3], t[3:])
            assert (v["time_ratio"], v["time_ratio_ci_low"], v["time_ratio_ci_high"]) == (
                pytest.approx(ratio), pytest.approx(lo), pytest.approx(hi))
            assert v["decided_by"] == "log-normal AFT time ratio, t interval"
            assert v["verdict"] == ("faster" if hi < 1 else "slower" if lo > 1
                                    else "not distinguishable")
        elif math.isnan(v["time_ratio"]):  # e.g. no seed reached 99%: the log-rank decides
            assert v["decided_by"] == "log-rank, exact permutation"
            assert v["verdict"] == "not distinguishable"  # p >= its floor 0.1
        decided.add(v["verdict"])
        (row,) = [r for r in md_rows(section(text, header), v["task"])
                  if r[1] == f"`{v['value']}`" and r[2] == f"`{default}`"]
        assert row[-2] == f"{tx.fmt_p(p)} (exact; floor {tx.fmt_p(v['logrank_floor'])})"
        assert row[-1].startswith(v["verdict"])
    if name == "augmentation":
        assert "faster" in decided


def test_comparison_summary_names_what_the_test_found():
    by = "log-normal AFT time ratio, t interval"
    rows = pd.DataFrame({"task": ["t"] * 3, "value": ["a", "b", "c"], "n": 5, "n_reference": 5,
                         "verdict": ["faster", "not distinguishable", "slower"],
                         "decided_by": "log-rank, exact permutation", "p_value": 0.004,
                         "p_floor": 2 / math.comb(10, 5)})
    text = study.comparison_summary(rows)
    assert re.search(r"\*\*faster\*\* than the default: `a` on t \(log-rank, exact "
                     r"permutation; p = 0.004\);", text)
    assert re.search(r"\*\*slower\*\* than the default: `c` on t", text)
    assert "other 1 not distinguishable" in text and f"{2 / math.comb(10, 5):.2g}" in text
    none = study.comparison_summary(rows.assign(verdict="not distinguishable", n=3,
                                                n_reference=3, decided_by=by, p_floor=0.0))
    assert "faster" not in none and "All 3 not distinguishable" in none
    assert "3 against 3 seeds, log-normal AFT time ratio, t interval: none (parametric)" in none
    # Ten against ten is asymptotic: the text says so, never "exact".
    ten = rows.assign(verdict="not distinguishable", n=10, n_reference=10,
                      decided_by="log-rank, asymptotic", p_floor=1.6e-5)
    assert "exact" not in study.comparison_summary(ten)
    assert "10 against 10 seeds, log-rank, asymptotic: < 0.001" in study.comparison_summary(ten)


# --- Figures ------------------------------------------------------------------------------------


def _neutral(colour) -> bool:
    r, g, b = to_rgb(colour)
    return abs(r - g) < 1e-6 and abs(g - b) < 1e-6


def _same(a, b) -> bool:
    return np.allclose(to_rgb(a), to_rgb(b), atol=1e-3)


def _artists(fig):
    """(kind, colours, linestyle, marker, hollow, hatch) of everything drawn with data."""
    out = []
    for ax in fig.axes:
        for line in ax.lines:
            y = np.asarray(line.get_ydata(), float)
            if y.size and np.isfinite(y).any():
                hollow = _same(line.get_markerfacecolor(), "white")
                out.append(("line", [line.get_color(), line.get_markeredgecolor()],
                            line.get_linestyle(), line.get_marker(), hollow, None))
        for patch in ax.patches:
            if isinstance(patch, Rectangle) and np.isfinite(patch.get_height()) and \
                    patch.get_height() != 0:
                out.append(("patch", [patch.get_facecolor()], None, None, False,
                            patch.get_hatch()))
        for coll in ax.collections:
            faces = [tuple(c) for c in coll.get_facecolor()] + \
                [tuple(c) for c in coll.get_edgecolor()]
            if len(coll.get_paths()):
                out.append(("fill", faces, None, None, False, None))
    return out


def _drawn(handle, artists) -> bool:
    if isinstance(handle, Patch):
        if handle.get_hatch():
            return any(a[5] == handle.get_hatch() for a in artists)
        colour = handle.get_facecolor()
        if _neutral(colour):
            return any(a[0] == "fill" for a in artists)
        return any(_same(c, colour) for a in artists for c in a[1])
    assert isinstance(handle, Line2D)
    colour, ls, marker = handle.get_color(), handle.get_linestyle(), handle.get_marker()
    hollow = _same(handle.get_markerfacecolor(), "white")
    if not _neutral(colour):
        return any(a[0] == "line" and any(_same(c, colour) for c in a[1]) for a in artists)
    return any(a[0] == "line" and (ls in ("None", "") or a[2] == ls)
               and (marker in ("None", "") or a[3] == marker) and (not hollow or a[4])
               for a in artists)


def test_every_legend_lists_only_what_is_drawn(drawn):
    assert set(drawn) == set(FIGURES)
    for name, fig in drawn.items():
        artists = _artists(fig)
        legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
        for legend in legends:
            for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
                assert _drawn(handle, artists), f"{name}: legend entry {text.get_text()!r}"


def test_legend_check_catches_an_entry_with_nothing_drawn():
    cells = pd.DataFrame({"task": ["a", "b"], "aug": ["x", "x"], "n_seeds": 3, "n_censored": 0,
                          "steps_to_99_mean": [100.0, 200.0], "steps_to_99_ci_low": [90, 190],
                          "steps_to_99_ci_high": [110, 210]})
    fig = plots.steps_to_99(cells, budget=300)
    handles = fig.legends[0].legend_handles
    assert not any(h.get_hatch() for h in handles if isinstance(h, Patch))  # none censored
    assert all(_drawn(h, _artists(fig)) for h in handles)
    ghost = Patch(facecolor="white", edgecolor=".15", hatch="///")
    assert not _drawn(ghost, _artists(fig))
    censored = plots.steps_to_99(cells.assign(n_censored=[1, 0]), budget=300)
    assert any(h.get_hatch() for h in censored.legends[0].legend_handles
               if isinstance(h, Patch))


def test_leakage_legend_entries_are_distinct(drawn):
    handles = drawn["augmentation_leakage"].legends[0].legend_handles
    keys = [(type(h).__name__, to_rgb(h.get_facecolor() if isinstance(h, Patch)
                                      else h.get_color()),
             getattr(h, "get_marker", lambda: None)(), getattr(h, "get_linestyle", str)())
            for h in handles]
    assert len(set(keys)) == len(keys)


def test_titles_and_legends_fit_inside_the_figure(drawn):
    """Every title, axis label and note lies inside the figure and off the legend."""
    for name, fig in drawn.items():
        renderer = FigureCanvasAgg(fig).get_renderer()
        fig.draw(renderer)
        box = fig.bbox
        suptitle = [t for t in fig.findobj(Text, include_self=False)
                    if t.get_text() and t.get_text() == fig.get_suptitle()]
        assert len(suptitle) == 1, name
        texts = [t for ax in fig.axes for t in (ax.title, ax.xaxis.label, ax.yaxis.label,
                                                *ax.texts) if t.get_text().strip()]
        legends = [lg.get_window_extent(renderer) for lg in fig.legends]
        for t in [*suptitle, *texts]:
            ext = t.get_window_extent(renderer)
            assert box.x0 - 1 <= ext.x0 and ext.x1 <= box.x1 + 1, (name, t.get_text())
            assert box.y0 - 1 <= ext.y0 and ext.y1 <= box.y1 + 1, (name, t.get_text())
            assert not any(ext.overlaps(lg) for lg in legends), (name, t.get_text())


def test_fraction_reached_figure_is_the_fraction_of_seeds(report, drawn):
    root, _, _ = report
    runs = tables(root, "augmentation_runs")
    fig = drawn["augmentation_fraction_reached"]
    colours = plots.palette(list(dict.fromkeys(runs["aug"])))
    for ax in fig.axes:
        task = ax.get_title()
        for line in ax.lines:
            aug = next(a for a, c in colours.items() if _same(c, line.get_color()))
            mine = runs[(runs["task"] == task) & (runs["aug"] == aug)]
            for x in (0, 100, 150, 200, 250, BUDGET):
                i = np.searchsorted(line.get_xdata(), x, side="right") - 1
                expected = np.mean(mine["grokked"] & (mine["steps_to_99"] <= x))
                assert line.get_ydata()[i] == pytest.approx(expected), (task, aug, x)


def test_fraction_reached_is_kaplan_meier_when_budgets_differ():
    """Runs censored at two budgets: the drawn line is 1 - S(t) of scipy's Kaplan-Meier,
    which the plain fraction reached would understate after the early budget."""
    steps = np.array([100, 150, 200, 200, 260, 300, 400, 500], float)
    grokked = np.array([True, False, True, False, True, True, False, True])
    runs = pd.DataFrame({"task": "t", "aug": "a", "steps_to_99": steps, "grokked": grokked,
                         "budget": np.where(grokked, 600, steps).astype(int)})
    fig = plots.fraction_reached(runs, hue="aug")
    (line,) = fig.axes[0].lines
    sf = stats.ecdf(stats.CensoredData.right_censored(steps, ~grokked)).sf
    for x in (0, 99, 100, 150, 199, 200, 259, 260, 300, 450, 500, 600):
        i = np.searchsorted(line.get_xdata(), x, side="right") - 1
        assert line.get_ydata()[i] == pytest.approx(1 - sf.evaluate(x)), x
    plain = np.mean(grokked & (steps <= 500))
    assert line.get_ydata()[-1] > plain + 0.05  # censoring taken into account


def test_modular_sharpness_draws_each_run_once_and_lists_only_families_with_points(report,
                                                                                     drawn):
    root, _, _ = report
    fig = drawn["modular_sharpness"]
    points = sum(len(line.get_xdata()) for line in fig.axes[0].lines
                 if line.get_linestyle() == "None")
    frames = [tables(root, f"{f}_runs") for f in ("experiment", "augmentation", "curriculum",
                                                  "architecture", "optimizer", "data_fraction",
                                                  "batch_size", "multivariate", "mechanism",
                                                  "accelerators")]
    runs = pd.concat(frames).drop_duplicates(["path", "seed"])
    positive = (runs["relative_gap"] > 0) & (runs["relative_sharpness"] > 0)
    assert points == int(positive.sum())
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    families = set(runs[positive]["source"].str.split("@").str[0])
    assert set(labels) - {"least-squares line in log-log"} == families
    assert "experiment" not in families  # at the paper defaults it is the base run


# --- Pooled analyses count each distinct run once ----------------------------------------------


def test_pooled_fit_counts_each_distinct_run_once(report):
    root, _, text = report
    modular = section(text, "## Sharpness across all modular-arithmetic runs")
    # The trained runs of modular tasks: each run folder under models/ times its seeds.
    n = sum(len(json.loads(p.read_text())["seeds"])
            for p in (root / "models").glob("*/*/config.json")
            if json.loads(p.read_text())["config"].get("data", {}).get("task")
            not in (None, "parity"))
    assert n == 3 * (4 + 16 + 20 + 4 + 6 + 6 + 2 + 2 + 1 + 7)  # ..., mechanism, accelerators
    (row,) = md_rows(modular, "relative sharpness")
    assert int(row[1]) == n  # N (distinct runs)
    frames = [tables(root, f"{f}_runs") for f in ("experiment", "augmentation", "curriculum",
                                                  "architecture", "optimizer", "data_fraction",
                                                  "batch_size", "multivariate", "mechanism",
                                                  "accelerators")]
    runs = pd.concat(frames).drop_duplicates(["path", "seed"])  # by folder, not run_key
    assert len(runs) == n
    keep = (runs["relative_gap"] > 0) & (runs["relative_sharpness"] > 0)
    slope, _ = np.polyfit(np.log10(runs[keep]["relative_gap"]),
                          np.log10(runs[keep]["relative_sharpness"]), 1)
    assert int(row[2]) == int(keep.sum()) and row[5] == f"{slope:.3g}"
    overview = text.split("## Experiment")[0]
    every = pd.concat([tables(root, f"{f}_runs") for f in (
        "experiment", *load_params(root / "params.yaml")["studies"])])
    distinct = len(every.drop_duplicates(["path", "seed"]))
    assert distinct < len(every)  # base runs are read by several studies
    assert f"{len(every)} rows (seed × cell) from {distinct} distinct runs" in overview


def test_concealment_fit_and_replacement_overlap(report):
    root, _, text = report
    runs = tables(root, "concealment_runs")
    body = section(text, "## Concealment study")
    keep = (runs["relative_gap"] > 0) & (runs["relative_sharpness"] > 0)
    slope, _ = np.polyfit(np.log10(runs[keep]["relative_gap"]),
                          np.log10(runs[keep]["relative_sharpness"]), 1)
    r, _ = stats.pearsonr(np.log10(runs[keep]["relative_gap"]),
                          np.log10(runs[keep]["relative_sharpness"]))
    (row,) = md_rows(body, "relative sharpness")
    assert row[5] == f"{slope:.3g}" and row[7] == f"{r:.3f}" and slope < 0
    # Drawing with replacement: the fraction of validation rows whose vector is also drawn
    # for training, against a simulation.
    rng = np.random.default_rng(0)
    for bits, n_train in ((7, 750), (11, 750), (15, 750)):
        hits = [np.isin(rng.integers(0, 2 ** bits, 250), rng.integers(0, 2 ** bits, n_train))
                .mean() for _ in range(400)]
        assert sharpness.replacement_overlap(bits, n_train) == pytest.approx(np.mean(hits),
                                                                             abs=0.01)


# --- Verdicts follow the numbers -----------------------------------------------------------------


def _arch_runs(val_after_train: int) -> pd.DataFrame:
    """An MLP whose validation reaches 99% ``val_after_train`` updates after training."""
    steps = np.arange(0, 3001, 10)
    rows = []
    for seed in SEEDS:
        train = (steps >= 200).astype(float)
        val = np.where(steps >= 200 + val_after_train, 1.0, 0.3)
        history = pd.DataFrame({"seed": seed, "step": steps, "train_acc": train,
                                "val_acc": val, "clean_val_acc": val, "train_loss": 0.0,
                                "val_loss": 0.0})
        final = pd.DataFrame([{"seed": seed, "final_train_acc": 1.0, "final_val_acc": 1.0,
                               "val_reachable": 0.0}])
        from groklab.metrics import Analysis
        from groklab.summary import seed_summaries_from

        (row,) = seed_summaries_from(history, final, budget=3000, chance=0.01,
                                     analysis=Analysis(grok_delay=500))
        rows.append({"arch": "mlp", "task": "x_plus_y", **row})
    return pd.DataFrame(rows)


def test_architecture_verdict_follows_the_delay():
    source = "the Exploring Grokking paper"
    spec = {"groks": {"mlp": False}, "groks_source": source,
            "never_fits_training": {"arch": "mlp", "steps": 20000, "source": source}}
    prompt = architecture.grok_verdicts(_arch_runs(100), spec, 500)
    late = architecture.grok_verdicts(_arch_runs(900), spec, 500)
    assert [v.agrees for v in prompt] == [True, False]  # generalises promptly: no grokking
    assert [v.agrees for v in late] == [False, False]  # groks, where the paper says it does not
    assert "3 of 3" in late[0].ours and "0 of 3" in prompt[0].ours
    text = str(late[0])
    assert f"; likely cause: {late[0].cause} (a count over 3 seeds, (not tested))." in text
    assert text.endswith("ours are the base run's (3000 updates).")  # the caveat, always
    assert "Caveat:" in str(prompt[0])  # printed when the runs agree too
    # The MLP ends at 100% training accuracy in 3000 updates: against "not within 20000",
    # a disagreement a shorter budget can show; had none reached 100%, 3000 updates could
    # not support "not within 20000": cannot tell. The budgets are said either way.
    never = _arch_runs(100)
    never["final_train_acc"] = 0.9
    (fits,) = architecture.grok_verdicts(never, {**spec, "groks": {}}, 500)
    assert fits.agrees is None and "the paper's budget is 20000 updates, ours 3000" in str(fits)
    assert "the paper's budget is 20000 updates, ours 3000" in str(late[1])
    # One seed decides no claim: a count over fewer than the papers' 3 seeds.
    one = architecture.grok_verdicts(_arch_runs(900).iloc[:1], spec, 500)
    assert one[0].agrees is None and "too few to tell" in str(one[0])


def _cells(**columns) -> pd.DataFrame:
    return pd.DataFrame(columns)


def test_claim_verdicts_change_with_the_numbers():
    fraction = _cells(task=["x_plus_y"] * 2, train_fraction=[0.05, 0.5], n_seeds=3,
                      n_censored=0, grok_delay_steps_mean=[900.0, 1200.0])
    spec = {"groks": [{"train_fraction": 0.05, "p": 113, "groks": False, "source": "s",
                       "text": "t"}],
            "most_prominent": {"train_fraction": 0.5, "source": "s", "text": "t"}}
    p = {("x_plus_y", 0.05): 113, ("x_plus_y", 0.5): 97}
    none = data_fraction.claim_verdicts(fraction.assign(n_groks=[0, 3]), spec, p)
    some = data_fraction.claim_verdicts(fraction.assign(n_groks=[3, 3]), spec, p)
    # "Most prominent" is read from mean delays, untested: described, never agreed with.
    assert [v.agrees for v in none] == [True, None]
    assert [v.agrees for v in some] == [False, None]
    assert "1200 updates) (not tested)" in str(some[1]) and "cannot tell" in str(some[1])
    one = data_fraction.claim_verdicts(fraction.assign(n_groks=[3, 0]), spec, p)
    assert "every seed groks only at fraction 0.05" in str(one[1])  # nothing to compare
    few = data_fraction.claim_verdicts(fraction.assign(n_groks=[0, 1], n_seeds=1), spec, p)
    assert few[0].agrees is None and "1 seed, fewer than 3: too few to tell" in str(few[0])

    # Volatility against batch size: Spearman over seeds, agreeing only when significant.
    def seeds(sd: list[float]) -> pd.DataFrame:
        return _cells(task="x_plus_y", batch_size=np.repeat([64, 128, 512], 3),
                      post_grok_val_sd=sd)
    claim = {"source": "the course project"}
    up = [.010, .011, .012, .020, .021, .022, .030, .031, .032]
    rising = batch_size.volatility_verdict(seeds(up), claim, 7500)
    falling = batch_size.volatility_verdict(seeds(up[::-1]), claim, 7500)
    assert (rising.agrees, falling.agrees) == (True, False)
    rho, p_value = stats.spearmanr(np.repeat([64, 128, 512], 3), up)
    assert f"ρ = {rho:.2f}, p {tx.p_eq(p_value)} (asymptotic) over 9 seeds" in str(rising)
    assert "the paper's budget is 30000 updates, ours 7500" in str(rising)
    means = _cells(task="x_plus_y", batch_size=[64, 128, 512], post_grok_val_sd=[.01, .02, .03])
    three = batch_size.volatility_verdict(means, claim, 30000)  # 3 points: p = 1/3 at best
    assert three.agrees is None and "p = 0.33 (exact)" in str(three)
    assert "budget" not in str(three)  # same budget as the paper: no budget caveat

    claim = {"operands": 3, "value": False, "settings": "p = 41", "source": "the course project"}
    runs = _cells(task="multi_add", operands=3, final_val_acc=[0.44, 0.5, 0.98])
    assert multivariate.performance_verdict(runs, "multi_add", claim).agrees is True
    fine = runs.assign(final_val_acc=[1.0, 0.995, 0.4])
    assert multivariate.performance_verdict(fine, "multi_add", claim).agrees is False


def test_sharpness_verdicts_change_with_the_numbers():
    gap = np.geomspace(0.5, 20, 12)
    runs = pd.DataFrame({"relative_gap": gap, "relative_sharpness": 2 * gap ** -0.7,
                         "absolute_sharpness": 0.01 * gap ** -0.3, "n": np.arange(12)})
    falls = sharpness.fit_verdicts(runs, "x", "a cause")
    rises = sharpness.fit_verdicts(runs.assign(relative_sharpness=0.1 * gap ** 0.6), "x", "c")
    assert [v.agrees for v in falls] == [True, True]
    assert [v.agrees for v in rises] == [False, True]
    assert rises[0].cause == "c" and "rises with relative gap" in rises[0].ours
    assert sharpness.gap_verdict(runs.assign(relative_gap=gap), "n", "c", "").agrees is True
    assert sharpness.gap_verdict(runs.assign(relative_gap=gap[::-1]), "n", "c", "").agrees \
        is False


# --- Published numbers -------------------------------------------------------------------------


def test_report_shows_published_means_of_listed_seeds(report):
    _, _, text = report
    runs = json.loads((REPO / "references" / "augmentation_paper_runs.json").read_text())["runs"]
    for aug, task in (("combined30", "x_plus_y"), ("combined15", "permutation")):
        listed = runs[aug][task]["step_val_acc_99"]
        n = len(runs[aug][task]["final_val_acc"])
        assert f"{np.mean(listed):.0f} ({len(listed)} of {n} seeds listed)" in text
    assert "none reached (3 of 3 seeds listed at 7500)" in text  # baseline permutation
    table1 = json.loads((REPO / "references" / "augmentation_paper_table1.json").read_text())
    body = section(text, "## Augmentation study")
    for task, row in table1["rows"].items():
        for aug, value in row.items():
            (line,) = [r for r in md_rows(body, task) if r[1] == aug and len(r) == 6]
            assert line[4] == ("N/A" if value is None else str(value))


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
    assert "Table 3's final *training* accuracy" in body  # 0.9739 in the text
    assert "does not name its task" in body and "exceeds ln 120" in body


def test_batch_size_counts_examples_seen(report):
    """Examples to 99% from the per-seed rows (steps times batch, mean and Student t half
    width by scipy; a lower bound with censored seeds) and examples seen (updates done times
    batch), against the table's text."""
    root, _, text = report
    runs = tables(root, "batch_size_runs")
    body = section(text, "## Batch-size study")
    for (task, batch), g in runs.groupby(["task", "batch_size"]):
        examples = g["steps_to_99"].to_numpy(float) * batch
        reached = g["grokked"].astype(bool)
        if reached.all():
            half = stats.t.ppf(0.975, len(g) - 1) * examples.std(ddof=1) / math.sqrt(len(g))
            expected = f"{examples.mean():.0f} ± {half:.0f}"
        else:
            expected = f"≥ {examples.mean():.0f} ({int(reached.sum())}/{len(g)} reached)"
        (row,) = [r for r in md_rows(body, task) if r[1] == str(batch)]
        assert expected in row and f"{g['steps_done'].mean() * batch:.0f}" in row


def test_sections_state_what_varied_and_what_was_held_fixed(report):
    _, _, text = report
    for header, factor in (("## Curriculum study", "train.curriculum"), ("## Optimizer study",
                           "train.optimizer"), ("## Concealment study", "data.concealed_bits"),
                           ("## Multivariate study", "data.operands")):
        body = section(text, header)
        assert f"**Varied:** `{factor}`" in body and "**Held fixed:**" in body
    multi = section(text, "## Multivariate study")
    assert "p = 23 (12167 equations)" in multi  # 23^3
    assert "(p = 113)" in section(text, "## Data-fraction study")


# --- Skipping, formatting, edge cases ------------------------------------------------------------


def test_missing_studies_skip_only_their_sections(tmp_path):
    root = build_tree(tmp_path, studies=("experiment", "concealment"))
    paths, text = run_report(root)
    assert "## Experiment" in text and "| x_div_y |" in text
    for header, name in (("## Augmentation study", "augmentation"),
                         ("## Curriculum study", "curriculum"),
                         ("## Linear student-teacher study", "linear_teacher")):
        body = section(text, header)
        assert "Skipped" in body and f"{name}_cells.csv" in body and "###" not in body
    assert "Skipped" not in section(text, "## Concealment study")
    assert sorted(p.name for p in paths) == sorted(
        ["experiment_curves.png", "concealment_gap.png", "concealment_sharpness.png",
         "concealment_curves.png", "modular_sharpness.png", "report.md"])


def test_fmt_steps_marks_censoring():
    assert tx.fmt_steps(4720.4, 4000, 5440, n_censored=0, n_seeds=3) == "4720 ± 720"
    assert tx.fmt_steps(5200, math.nan, math.nan, n_censored=1, n_seeds=3) == \
        "≥ 5200 (2/3 reached)"
    assert tx.fmt_steps(7500, 7500, 7500, n_censored=3, n_seeds=3) == "≥ 7500 (0/3 reached)"
    assert tx.fmt_steps(math.nan, math.nan, math.nan, n_censored=0, n_seeds=0) == "—"
    assert tx.fmt_mean_ci(0.5, math.nan, math.nan, digits=2) == "0.50"


def test_cell_with_one_censored_seed_is_a_lower_bound():
    runs = pd.DataFrame({"steps_to_99": [4000, 5000, 7500], "grokked": [True, True, False],
                         "val_fit_ok": True, "train_fit_ok": True})
    cell = pd.Series(cell_summary(runs))
    assert cell["n_censored"] == 1 and math.isnan(cell["steps_to_99_ci_low"])
    assert tx.cell_steps(cell) == "≥ 5500 (2/3 reached)"


def test_markdown_table_escapes_and_aligns():
    df = pd.DataFrame({"name": ["a|b", None], "value": [1.5, math.nan]})
    assert tx.markdown_table(df).splitlines() == [
        "| name | value |", "| :--- | ---: |", "| a\\|b | 1.5 |", "| — | — |"]


def test_steps_figure_hatches_censored_cells(report):
    root, _, _ = report
    cells = tables(root, "augmentation_cells")
    fig = plots.steps_to_99(cells, budget=BUDGET)
    hatched = [p for p in fig.axes[0].patches if p.get_hatch()]
    assert len(hatched) == int((cells["n_censored"] > 0).sum()) > 0


def test_sharpness_figures_and_tables_survive_runs_without_positive_points():
    runs = pd.DataFrame({"study": "s", "relative_gap": [math.nan, -0.2, 0.0],
                         "relative_sharpness": [math.nan, 0.5, 0.7],
                         "absolute_sharpness": [math.nan, 0.01, 0.02],
                         "train_fit_ok": [False, True, True], "val_fit_ok": [False, True, True],
                         "train_fit_reason": ["flat curve: rises by 0.01", "", ""],
                         "val_fit_reason": ["poor fit: R^2=0.1 < min_r2=0.9", "", ""]})
    fig = sharpness.sharpness_figure(runs, hue="study")
    assert len(fig.axes) == 4
    for figure in (fig, sharpness.sharpness_figure(runs, hue=None, logs=(True,))):
        figure.savefig(io.BytesIO(), format="png")  # drawing is where log axes would fail
    (row,) = md_rows(sharpness.fit_table(runs), "relative sharpness")
    assert row[1:6] == ["3", "0", "2", "1", "—"]
    failures = sharpness.fit_failure_table(runs)
    assert "flat curve (1)" in failures and "poor fit (1)" in failures


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
    (row,) = [r for r in md_rows(text, "x_plus_y") if r[1] == "combined30" and len(r) == 6]
    # One seed, from its history: the first evaluation at >= 99% validation accuracy, else
    # the budget as a lower bound; no interval from one seed.
    history = pd.read_csv(root / "models/augmentation/x_plus_y-combined30/history.csv")
    hit = history.loc[history["val_acc"] >= 0.99, "step"]
    assert row[2] == (f"{hit.min():.0f}" if len(hit) else "≥ 30 (0/1 reached)")
    headers = re.findall(r"^## (.+)$", text, flags=re.M)  # only the declared studies
    assert headers == ["Experiment", "Augmentation study",
                       "Sharpness across all modular-arithmetic runs"]


def test_a_first_look_report_knows_its_scale(tmp_path, monkeypatch):
    """One seed and the stop rule: the banner says so at the top; no verdict rests on a
    count over one seed or on means; no interval, min-max band or "95% interval" title
    from one seed; no "nan" and no "p = 0"."""
    import sys

    monkeypatch.setattr(sys.modules[__name__], "SEEDS", [0])

    def first_look(params):
        params["seeds"] = [0]
        params["train"]["stop_after_grok"] = 200

    root = build_tree(tmp_path, edit=first_look)
    _, text = run_report(root)
    head = text.split("\n## ")[0]
    assert "**Scale: a first look, not the papers' design.** 1 seed per cell" in head
    assert "runs stop 200 updates after validation accuracy reaches 99%" in head
    assert not re.search(r"± ?\d", text) and not re.search(r"\bnan\b", text.lower())
    assert not re.search(r"p = 0(?![.\d])", text)
    assert "one seed, so no interval" in text and "(one seed: no interval)" in text
    assert "half-width of the 95% interval" not in text and "intervals in the table" not in text
    for line in text.splitlines():  # a stated agreement names a test, never a count or means
        if "**agree**" in line or "**disagree**" in line:
            assert re.search(r"test (of the log-log fit )?at 0\.05", line), line
    assert "too few to tell" in text and "(not tested)" in text
    params = load_params(root / "params.yaml")
    _, figs = build_report(params, root / "reports/tables", root / "models",
                           root / "references")
    for name, fig in figs.items():
        legend_text = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
        assert not any("seed minimum to maximum" in t for t in legend_text), name
        assert "95% interval" not in (fig.get_suptitle() or ""), name
        assert not any("95% interval" in ax.get_title() for ax in fig.axes), name

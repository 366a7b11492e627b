"""Per-seed and per-cell summaries of trained cells, and each cell against its reference.

Pure: history and final tables in, flat dicts and DataFrames out (the stages write them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from groklab.config import chance_accuracy
from groklab.metrics import (
    Analysis,
    aggregate,
    comparison_verdict,
    logrank,
    median_difference,
    summarize_history,
)

if TYPE_CHECKING:  # pandas is imported where frames are built: stage start-up pays imports
    import pandas as pd

    from groklab.train import TrainResult

# Metrics aggregated across seeds for every cell (mean, sd, 95% interval; no interval when
# a seed is censored, see groklab.metrics.aggregate).
CELL_METRICS = (
    "steps_to_99", "steps_to_99_train", "grok_delay_steps", "max_val_acc_rate",
    "final_train_acc", "final_val_acc", "final_train_loss", "final_val_loss", "clean_val_acc",
    "val_reachable", "val_in_train", "relative_gap", "relative_gap_clean", "relative_sharpness",
    "absolute_sharpness", "val_fit_tau", "train_fit_tau", "post_grok_val_sd", "train_mid_step",
    "val_mid_step", "steps_to_95", "max_softmax_collapse", "final_softmax_collapse",
)
# Which flag says a seed's value is observed rather than censored at the budget.
CENSORING = {"steps_to_99": "grokked", "steps_to_95": "reached_95",
             "steps_to_99_train": "train_reached",
             "grok_delay_steps": "~grok_delay_censored"}
ALPHA = 0.05  # a comparison is "faster"/"slower" only when the log-rank p-value is below it


def seed_summaries_from(history: pd.DataFrame, final: pd.DataFrame, *, budget: int,
                        chance: float, analysis: Analysis = Analysis()  # noqa: B008 - frozen
                        ) -> list[dict[str, Any]]:
    """One flat dict of scalars per seed (see :func:`groklab.metrics.summarize_history`).

    ``final_*`` values come from evaluating the whole training and validation splits
    after the last update (``final``), not from the last evaluation of the curves. A run
    with reachable validation pairs (``val_reachable > 0``) is augmented: its clean
    validation curve is fitted too. ``clean_val_acc`` stays NaN when no pair is clean.
    """
    out = []
    finals = final.set_index("seed")
    for seed, hist in history.groupby("seed", sort=False):
        row = finals.loc[seed]
        augmented = float(row.get("val_reachable", 0.0) or 0.0) > 0
        summary: dict[str, Any] = {"seed": int(seed), "budget": budget}
        summary.update(summarize_history(hist.reset_index(drop=True), budget=budget,
                                         chance=chance, analysis=analysis, augmented=augmented))
        summary.update({k: _scalar(v) for k, v in row.items()})
        summary["clean_val_acc"] = summary["final_clean_val_acc"]
        summary["steps_done"] = int(hist["step"].max())
        out.append(summary)
    return out


def seed_summaries(result: TrainResult,
                   analysis: Analysis = Analysis()) -> list[dict[str, Any]]:  # noqa: B008
    """:func:`seed_summaries_from` for a result still in memory."""
    chance = chance_accuracy(result.config.data)
    return seed_summaries_from(result.history, result.final, budget=result.config.train.steps,
                               chance=chance, analysis=analysis)


def _flag(runs: pd.DataFrame, name: str) -> pd.Series:
    negate = name.startswith("~")
    flag = runs[name.lstrip("~")].astype(str).str.strip().str.lower().isin(["true", "1", "1.0"])
    return ~flag if negate else flag


def cell_summary(runs: pd.DataFrame) -> dict[str, Any]:
    """Across-seed aggregate of one cell's per-seed rows.

    ``steps_to_99`` keeps censored seeds at the budget (the mean is then a lower bound, with
    no interval); ``frac_reached``/``n_censored`` count the seeds whose validation reached
    0.99, ``frac_groks``/``n_groks`` those that grokked (reached it at least the grok delay
    after training did) and ``n_collapsed`` those that fell back after reaching it. Failed erf
    fits (NaN) are left out of the fit-based aggregates, and ``n_fit_ok`` counts the rest.
    """
    out: dict[str, Any] = {"n_seeds": len(runs)}
    for metric in CELL_METRICS:
        if metric not in runs:
            continue
        flag = CENSORING.get(metric)
        agg = aggregate(runs[metric].astype(float), _flag(runs, flag) if flag else None)
        for key in ("mean", "sd", "ci_low", "ci_high"):
            out[f"{metric}_{key}"] = getattr(agg, key)
    reached = _flag(runs, "grokked")
    out["frac_reached"] = float(reached.mean())
    out["n_censored"] = int((~reached).sum())
    if "reached_95" in runs:  # Grokfast's 95% measure, censored on its own
        out["n_censored_95"] = int((~_flag(runs, "reached_95")).sum())
    for flag in ("groks", "collapsed", "grok_delay_censored"):
        if flag in runs:
            out[f"n_{flag}"] = int(_flag(runs, flag).sum())
    if "groks" in runs:
        out["frac_groks"] = out["n_groks"] / len(runs)
    out["n_fit_ok"] = int((_flag(runs, "val_fit_ok") & _flag(runs, "train_fit_ok")).sum())
    if "clean_fit_ok" in runs:
        out["n_clean_fit_ok"] = int(_flag(runs, "clean_fit_ok").sum())
    return out


def _scalar(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


# --- Each cell against its reference -----------------------------------------------------

COMPARISON_COLUMNS = (
    "task", "value", "reference", "n", "n_reference", "n_reached", "n_reached_reference",
    "median", "median_reference", "median_diff", "median_diff_bound", "median_diff_ci_low",
    "median_diff_ci_high", "logrank_z", "p_value", "p_method", "p_asymptotic", "verdict",
)


def compare_cells(runs: pd.DataFrame, factor: str, reference: Any,
                  alpha: float = ALPHA) -> pd.DataFrame:
    """Every cell of a study against its reference cell of the same task, on steps to 99%.

    ``runs``: the study's per-seed table (``task``, ``factor``, ``steps_to_99``, ``grokked``,
    ``budget``). For each task with a row at ``reference`` (the study's default value, read
    from the base run) and each other value: seeds, seeds that reached 99%, the medians
    (censored seeds at the budget) and their difference with a bootstrap interval
    (:func:`groklab.metrics.median_difference`), the log-rank test
    (:func:`groklab.metrics.logrank`; ``p_method`` says whether ``p_value`` is exact) and the
    ``verdict`` (:func:`groklab.metrics.comparison_verdict` at ``alpha``).
    """
    rows = []
    for task, group in runs.groupby("task", sort=False):
        keyed = group[factor].astype(str)
        ref = group[keyed == str(reference)]
        if ref.empty:
            continue
        for value, cell in group[keyed != str(reference)].groupby(factor, sort=False):
            a, b = cell["steps_to_99"].astype(float), ref["steps_to_99"].astype(float)
            ra, rb = _flag(cell, "grokked"), _flag(ref, "grokked")
            same = set(cell["budget"]) == set(ref["budget"]) and cell["budget"].nunique() == 1
            test = logrank(a, ra, b, rb, same_budget=same)
            diff = median_difference(a, ra, b, rb)
            rows.append({
                "task": task, "value": value, "reference": reference, "n": len(cell),
                "n_reference": len(ref), "n_reached": int(ra.sum()),
                "n_reached_reference": int(rb.sum()), "median": float(np.median(a)),
                "median_reference": float(np.median(b)), "median_diff": diff.diff,
                "median_diff_bound": diff.bound, "median_diff_ci_low": diff.ci_low,
                "median_diff_ci_high": diff.ci_high, "logrank_z": test.z, "p_value": test.p,
                "p_method": "exact permutation" if np.isfinite(test.p_exact) else "asymptotic",
                "p_asymptotic": test.p_asymptotic, "verdict": comparison_verdict(test, alpha),
            })
    import pandas as pd

    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


# The headline numbers of each cell: what `dvc metrics` and `dvc exp show` show.
HEADLINE = ("steps_to_99_mean", "frac_groks", "final_val_acc_mean", "relative_gap_mean")
AUGMENTED_HEADLINE = ("clean_val_acc_mean",)  # only where validation pairs are reachable


def headline_tree(cells: pd.DataFrame, keys: list[str]) -> dict[str, Any]:
    """Nested scalars for a DVC metrics file: ``{task: {value: {metric: number}}}``.

    DVC drops nulls and lists, so a metric that is undefined (NaN, e.g. a failed fit) is
    left out; the detailed statistics stay in ``reports/tables``.
    """
    tree: dict[str, Any] = {}
    for _, cell in cells.iterrows():
        node = tree
        for key in keys:
            node = node.setdefault(str(cell[key]), {})
        augmented = float(cell.get("val_reachable_mean", 0) or 0) > 0
        node.update(_scalars(cell, HEADLINE + (AUGMENTED_HEADLINE if augmented else ())))
    return tree


def _scalars(row: pd.Series, keys: tuple[str, ...]) -> dict[str, float | int]:
    out: dict[str, float | int] = {}
    for key in keys:
        value = row.get(key)
        if isinstance(value, bool | np.bool_):
            out[key] = int(value)
        elif value is not None and np.isfinite(float(value)):
            out[key] = round(float(value), 6)
    return out

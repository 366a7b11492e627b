"""Per-seed and per-cell summaries of trained cells, and each cell against its reference.

Pure: history and final tables in, flat dicts and DataFrames out (the stages write them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from groklab.config import chance_accuracy
from groklab.mechanism import EVENT_CENSORING
from groklab.metrics import (
    Analysis,
    aggregate,
    logrank,
    median_difference,
    summarize_history,
)
from groklab.survival import TimeRatio, stratified_logrank, time_ratio

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
    "val_mid_step", "circuit_step", "cleanup_step", "circuit_lag", "cleanup_lag",
    "steps_to_95", "max_softmax_collapse", "final_softmax_collapse",
)
# Which flag says a seed's value is observed rather than censored at the budget.
CENSORING = {"steps_to_99": "grokked", "steps_to_95": "reached_95",
             "steps_to_99_train": "train_reached",
             "grok_delay_steps": "~grok_delay_censored", **EVENT_CENSORING}
ALPHA = 0.05  # a comparison is "faster"/"slower" only when its deciding test's p is below it


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
    after training did), ``n_collapsed`` those that fell back after reaching it and ended
    below the floor at the budget, ``n_stopped_below`` those a stop rule ended below it
    before the budget, ``n_dipped`` those that fell back and recovered. Failed erf
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
    for flag in ("groks", "collapsed", "stopped_below", "dipped", "grok_delay_censored"):
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
    "task", "value", "reference", "metric", "n", "n_reference", "n_reached",
    "n_reached_reference", "median", "median_reference", "median_diff", "median_diff_bound",
    "logrank_z", "logrank_p", "logrank_method", "logrank_floor", "time_ratio",
    "time_ratio_ci_low", "time_ratio_ci_high", "time_ratio_p", "time_ratio_df",
    "time_ratio_reason", "p_value", "p_floor", "decided_by", "verdict",
)
STUDY_COLUMNS = (
    "value", "reference", "metric", "tasks", "n", "n_reference", "n_reached",
    "n_reached_reference", "logrank_z", "logrank_p", "logrank_method", "logrank_floor",
    "time_ratio", "time_ratio_ci_low", "time_ratio_ci_high", "time_ratio_p", "time_ratio_df",
    "time_ratio_reason", "p_value", "p_floor", "decided_by", "verdict",
)
AFT = "log-normal AFT time ratio, t interval"


def decide(logrank_p: float, logrank_floor: float, logrank_method: str, ratio: TimeRatio,
           alpha: float = ALPHA) -> dict[str, Any]:
    """Which test decides a comparison, and its verdict.

    The log-rank test decides when it can reach ``alpha`` at all (its floor is below it);
    otherwise the time ratio's interval does (parametric: no floor), when it is defined; else
    the log-rank test, which then cannot reach a verdict. "faster"/"slower" only when the
    deciding p is below ``alpha``, else "not distinguishable"; choosing by the floor, which
    the design fixes, keeps one pre-set test per comparison.
    """
    if logrank_floor < alpha or not ratio.ok:
        return {"p_value": logrank_p, "p_floor": logrank_floor,
                "decided_by": f"log-rank, {logrank_method}"}
    return {"p_value": ratio.p, "p_floor": 0.0, "decided_by": AFT}


def _verdict(decision: dict[str, Any], z: float, ratio: TimeRatio, alpha: float) -> str:
    if not decision["p_value"] < alpha:
        return "not distinguishable"
    faster = ratio.ratio < 1 if decision["decided_by"] == AFT else z > 0
    return "faster" if faster else "slower"


def _ratio_columns(r: TimeRatio) -> dict[str, Any]:
    return {"time_ratio": r.ratio, "time_ratio_ci_low": r.ci_low,
            "time_ratio_ci_high": r.ci_high, "time_ratio_p": r.p, "time_ratio_df": r.df,
            "time_ratio_reason": r.reason}


def _one_budget(*frames: pd.DataFrame) -> bool:
    budgets = set().union(*(set(f["budget"]) for f in frames))
    return len(budgets) == 1


def compare_cells(runs: pd.DataFrame, factor: str, reference: Any, alpha: float = ALPHA, *,
                  metric: str = "steps_to_99", event: str = "grokked") -> pd.DataFrame:
    """Every cell of a study against its reference cell of the same task, on a time to an
    event (default: steps to 99% validation accuracy, ``grokked`` saying it was reached).

    ``runs``: the study's per-seed table (``task``, ``factor``, ``metric``, ``event`` and
    ``budget``; ``event`` may be ``~flag`` for a censoring flag). For each task with a row at
    ``reference`` (the study's default value) and each other value: seeds, seeds that reached
    the event, medians (censored seeds at the budget) and their difference (a description,
    :func:`groklab.metrics.median_difference`), the log-rank test
    (:func:`groklab.metrics.logrank`: exact permutation p where it can be, its ``method`` and
    the smallest p it could give, ``logrank_floor``: 0.1 at 3 vs 3), the time ratio of a
    log-normal AFT fit with its interval (:func:`groklab.survival.time_ratio`), and the
    ``verdict`` of the test that decides (:func:`decide`: ``decided_by``, ``p_value``,
    ``p_floor``).
    """
    rows = []
    runs = runs[runs[metric].notna()]  # e.g. a mechanism event of an unmeasured task
    for task, group in runs.groupby("task", sort=False):
        keyed = group[factor].astype(str)
        ref = group[keyed == str(reference)]
        if ref.empty:
            continue
        for value, cell in group[keyed != str(reference)].groupby(factor, sort=False):
            a, b = cell[metric].astype(float), ref[metric].astype(float)
            ra, rb = _flag(cell, event), _flag(ref, event)
            test = logrank(a, ra, b, rb, same_budget=_one_budget(cell, ref))
            diff = median_difference(a, ra, b, rb)
            both = np.concatenate([a, b])
            ratio = time_ratio(both, np.concatenate([ra, rb]), np.arange(both.size) < len(a))
            decision = decide(test.p, test.p_floor, test.method, ratio, alpha)
            rows.append({
                "task": task, "value": value, "reference": reference, "metric": metric,
                "n": len(cell), "n_reference": len(ref), "n_reached": int(ra.sum()),
                "n_reached_reference": int(rb.sum()), "median": float(np.median(a)),
                "median_reference": float(np.median(b)), "median_diff": diff.diff,
                "median_diff_bound": diff.bound, "logrank_z": test.z, "logrank_p": test.p,
                "logrank_method": test.method, "logrank_floor": test.p_floor,
                **_ratio_columns(ratio), **decision,
                "verdict": _verdict(decision, test.z, ratio, alpha),
            })
    import pandas as pd

    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def compare_study(runs: pd.DataFrame, factor: str, reference: Any, alpha: float = ALPHA, *,
                  metric: str = "steps_to_99", event: str = "grokked") -> pd.DataFrame:
    """Each value of a study against its reference across the study's tasks: the question the
    papers ask ("does this value change grokking?") with every task's seeds.

    Per value: a log-rank test stratified by task
    (:func:`groklab.survival.stratified_logrank`; exact by relabelling within tasks where
    feasible, its ``logrank_method`` and ``logrank_floor`` stated) and a time ratio with one
    intercept per task (:func:`groklab.survival.time_ratio`), over the tasks that have both
    the value and the reference; the verdict as in :func:`compare_cells`. Empty when no task
    has the reference.
    """
    rows = []
    keyed = runs[factor].astype(str)
    ref_all = runs[keyed == str(reference)]
    for value, cell in runs[keyed != str(reference)].groupby(factor, sort=False):
        tasks = [t for t in dict.fromkeys(cell["task"]) if (ref_all["task"] == t).any()]
        if not tasks:
            continue
        cell = cell[cell["task"].isin(tasks)]
        ref = ref_all[ref_all["task"].isin(tasks)]
        both = _concat(cell, ref)
        t = both[metric].astype(float).to_numpy()
        e = _flag(both, event).to_numpy()
        in_a = np.arange(len(both)) < len(cell)
        strata = both["task"].astype(str).to_numpy()
        swap = [_one_budget(both[strata == s]) for s in dict.fromkeys(strata.tolist())]
        test = stratified_logrank(t, e, in_a, strata, exchangeable=swap)
        ratio = time_ratio(t, e, in_a, strata)
        decision = decide(test.p, test.p_floor, test.method, ratio, alpha)
        rows.append({
            "value": value, "reference": reference, "metric": metric, "tasks": len(tasks),
            "n": len(cell), "n_reference": len(ref), "n_reached": int(e[in_a].sum()),
            "n_reached_reference": int(e[~in_a].sum()), "logrank_z": test.z,
            "logrank_p": test.p, "logrank_method": test.method, "logrank_floor": test.p_floor,
            **_ratio_columns(ratio), **decision,
            "verdict": _verdict(decision, test.z, ratio, alpha),
        })
    import pandas as pd

    return pd.DataFrame(rows, columns=list(STUDY_COLUMNS))


def _concat(*frames: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


# The headline numbers of each cell, in this order: what `dvc metrics show` prints, one row
# per cell (reports/metrics/<family>/<cell>.json), and what `dvc exp show` and `dvc metrics
# diff` compare. Clean validation accuracy and the fraction of validation pairs an augmented
# training example can reach stand before validation accuracy, so a rise that is leakage is
# seen as such (clean_val_acc is absent where no validation pair is clean).
HEADLINE = {"steps_to_99": "steps_to_99_mean", "grokked": "frac_groks",
            "clean_val_acc": "clean_val_acc_mean", "val_reachable": "val_reachable_mean",
            "val_acc": "final_val_acc_mean", "relative_gap": "relative_gap_mean"}


def headline(cell: pd.Series | dict[str, Any]) -> dict[str, float | int]:
    """One cell's DVC metrics: :data:`HEADLINE`'s keys, from its row of ``<family>_cells.csv``.

    DVC drops nulls, so a metric that is undefined (NaN: a failed fit, no clean pair) is
    left out; the detailed statistics stay in ``reports/tables``.
    """
    row = {key: cell.get(column) for key, column in HEADLINE.items()}
    return _scalars(row, tuple(HEADLINE))


def _scalars(row: pd.Series | dict[str, Any], keys: tuple[str, ...]
             ) -> dict[str, float | int]:
    out: dict[str, float | int] = {}
    for key in keys:
        value = row.get(key)
        if isinstance(value, bool | np.bool_):
            out[key] = int(value)
        elif value is not None and np.isfinite(float(value)):
            out[key] = round(float(value), 6)
    return out

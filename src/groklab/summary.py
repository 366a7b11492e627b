"""Per-seed and per-cell summaries of trained cells, from their history and final tables."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from groklab.metrics import aggregate, summarize_history
from groklab.tasks import chance_accuracy

if TYPE_CHECKING:  # pandas is imported where frames are built: stage start-up pays imports
    import pandas as pd

    from groklab.train import TrainResult

# Metrics aggregated across seeds for every cell (mean, sd, 95% interval).
CELL_METRICS = (
    "steps_to_99", "steps_to_99_train", "max_val_acc_rate", "final_train_acc", "final_val_acc",
    "final_train_loss", "final_val_loss", "clean_val_acc", "val_reachable", "relative_gap",
    "relative_sharpness", "absolute_sharpness", "val_fit_tau", "train_fit_tau",
)


def seed_summaries_from(history: pd.DataFrame, final: pd.DataFrame, *, budget: int,
                        chance: float) -> list[dict[str, Any]]:
    """One flat dict of scalars per seed (see :func:`groklab.metrics.summarize_history`).

    ``final_*`` values come from evaluating the whole training and validation splits
    after the last update (``final``), not from the last logged batch means.
    """
    out = []
    for seed, hist in history.groupby("seed", sort=False):
        summary: dict[str, Any] = {"seed": int(seed), "budget": budget}
        summary.update(summarize_history(hist.reset_index(drop=True), budget=budget,
                                         chance=chance))
        row = final.set_index("seed").loc[seed]
        summary.update({k: _scalar(v) for k, v in row.items()})
        summary["clean_val_acc"] = summary["final_clean_val_acc"]
        summary["steps_done"] = int(hist["step"].max())
        out.append(summary)
    return out


def seed_summaries(result: TrainResult) -> list[dict[str, Any]]:
    """:func:`seed_summaries_from` for a result still in memory."""
    chance = chance_accuracy(result.config.data)
    return seed_summaries_from(result.history, result.final, budget=result.config.train.steps,
                               chance=chance)


def cell_summary(runs: pd.DataFrame) -> dict[str, Any]:
    """Across-seed aggregate of one cell's per-seed rows.

    ``steps_to_99`` keeps censored seeds at the budget (the mean is then a lower bound);
    ``frac_grokked`` and ``n_censored`` say how many seeds never reached 0.99. Failed erf
    fits (NaN) are left out of the fit-based aggregates, and ``n_fit_ok`` counts the rest.
    """
    out: dict[str, Any] = {"n_seeds": len(runs)}
    for metric in CELL_METRICS:
        if metric not in runs:
            continue
        reached = runs["grokked"] if metric == "steps_to_99" else (
            runs["train_reached"] if metric == "steps_to_99_train" else None)
        agg = aggregate(runs[metric].astype(float), reached)
        for key in ("mean", "sd", "ci_low", "ci_high"):
            out[f"{metric}_{key}"] = getattr(agg, key)
    out["frac_grokked"] = float(runs["grokked"].astype(bool).mean())
    out["n_censored"] = int((~runs["grokked"].astype(bool)).sum())
    fits_ok = runs["val_fit_ok"].astype(bool) & runs["train_fit_ok"].astype(bool)
    out["n_fit_ok"] = int(fits_ok.sum())
    return out


def _scalar(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


# Scalars of each cell and seed that go to DVC's metrics files (`dvc metrics diff`).
METRICS_CELL_KEYS = (
    "steps_to_99_mean", "steps_to_99_ci_low", "steps_to_99_ci_high", "frac_grokked",
    "n_censored", "steps_to_99_train_mean", "max_val_acc_rate_mean", "final_train_acc_mean",
    "final_val_acc_mean", "final_train_loss_mean", "final_val_loss_mean", "val_reachable_mean",
    "clean_val_acc_mean", "relative_gap_mean", "relative_sharpness_mean",
    "absolute_sharpness_mean", "n_fit_ok",
)
METRICS_SEED_KEYS = ("steps_to_99", "grokked", "steps_to_99_train", "final_train_acc",
                     "final_val_acc", "val_reachable", "clean_val_acc")


def metrics_tree(cells: pd.DataFrame, runs: pd.DataFrame, keys: list[str]) -> dict[str, Any]:
    """Nested scalars for a DVC metrics file: ``{task: {factor...: {metric: value}}}``.

    DVC drops nulls and lists, so a metric that is undefined (NaN, e.g. a failed fit) is
    left out and its ``n_fit_ok`` / ``grokked`` flag says why; booleans become 0/1.
    """
    tree: dict[str, Any] = {}
    for _, cell in cells.iterrows():
        node = tree
        for key in keys:
            node = node.setdefault(str(cell[key]), {})
        node.update(_scalars(cell, METRICS_CELL_KEYS))
        mine = runs
        for key in keys:
            mine = mine[mine[key] == cell[key]]
        for _, run in mine.iterrows():
            node.setdefault("seeds", {})[str(run["seed"])] = _scalars(run, METRICS_SEED_KEYS)
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

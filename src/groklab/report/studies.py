"""Markdown for a study that varies one factor: its table and a reading of the numbers.

Pure functions: a ``*_cells.csv`` table (and optionally its ``*_runs.csv``) in, markdown out.
Every sentence states something computed from the rows it is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from groklab.report.markdown import (
    DASH,
    _missing,
    as_bool,
    cell_steps,
    fmt_mean_ci,
    markdown_table,
)


def fmt_sig(mean: float, ci_low: float = math.nan, ci_high: float = math.nan,
            sig: int = 3) -> str:
    """``mean ± half-width`` with ``sig`` significant digits (for ratios and slopes of any size)."""
    if _missing(mean) or not np.isfinite(mean):
        return DASH
    half = math.nan if _missing(ci_low) or _missing(ci_high) else (ci_high - ci_low) / 2
    if 1e3 <= abs(mean) < 1e6:  # steps: whole numbers read better than 1.07e+04
        return f"{mean:.0f}" + ("" if math.isnan(half) else f" ± {half:.0f}")
    return f"{mean:.{sig}g}" + ("" if math.isnan(half) else f" ± {half:.2g}")


def _metric(name: str, fmt: Callable[..., str], **kw: Any) -> Callable[[pd.Series], str]:
    return lambda c: fmt(c[f"{name}_mean"], c[f"{name}_ci_low"], c[f"{name}_ci_high"], **kw)


def grokked(c: pd.Series) -> str:
    """Seeds that reached 99% validation accuracy, as ``k/n``."""
    return f"{int(c['n_seeds'] - c['n_censored'])}/{int(c['n_seeds'])}"


# Column name -> formatter of one cell row; sections pick the columns they need.
COLUMNS: dict[str, Callable[[pd.Series], str]] = {
    "steps to 99%": cell_steps,
    "grokked": grokked,
    "final train acc": _metric("final_train_acc", fmt_mean_ci, digits=3),
    "final val acc": _metric("final_val_acc", fmt_mean_ci, digits=3),
    "final train loss": _metric("final_train_loss", fmt_sig),
    "final val loss": _metric("final_val_loss", fmt_sig),
    "relative gap": _metric("relative_gap", fmt_sig),
    "relative sharpness": _metric("relative_sharpness", fmt_sig),
    "absolute sharpness": _metric("absolute_sharpness", fmt_sig),
    "fits ok": lambda c: f"{int(c['n_fit_ok'])}/{int(c['n_seeds'])}",
}
DEFAULT_COLUMNS = ("steps to 99%", "grokked", "final train acc", "final val acc",
                   "relative gap", "relative sharpness", "absolute sharpness", "fits ok")


def study_table(cells: pd.DataFrame, factor: str, columns: Sequence[str] = DEFAULT_COLUMNS,
                extra: dict[str, Callable[[pd.Series], str]] | None = None) -> str:
    """One row per cell: task, the factor's value, then ``columns`` (names of :data:`COLUMNS`)
    and ``extra`` columns (name -> formatter of a cell row)."""
    formatters = {name: COLUMNS[name] for name in columns} | (extra or {})
    keys = [k for k in ("task", factor) if k in cells]
    rows = [{**{k: c[k] for k in keys}, **{name: f(c) for name, f in formatters.items()}}
            for _, c in cells.iterrows()]
    return markdown_table(pd.DataFrame(rows), align=["l"] * len(keys) + ["r"] * len(formatters))


def _names(values: Sequence[Any]) -> str:
    return ", ".join(f"`{v}`" for v in values)


def trend(xs: Sequence[float], ys: Sequence[float]) -> str:
    """How ``ys`` moves as ``xs`` increases: monotonic up/down or not (NaN points left out)."""
    pts = sorted((x, y) for x, y in zip(xs, ys, strict=True) if np.isfinite(y))
    if len(pts) < 2:
        return "has too few values to show a trend"
    d = np.diff([y for _, y in pts])
    first, last = pts[0], pts[-1]
    span = f"from {first[1]:.3g} at {first[0]:g} to {last[1]:.3g} at {last[0]:g}"
    if (d > 0).all():
        return f"rises monotonically {span}"
    if (d < 0).all():
        return f"falls monotonically {span}"
    return f"goes {span}, not monotonically"


def _extremes(group: pd.DataFrame, factor: str, metric: str, label: str) -> str | None:
    ok = group[np.isfinite(group[f"{metric}_mean"].astype(float))]
    if ok.empty:
        return None
    if len(ok) == 1:
        r = ok.iloc[0]
        return f"{label} is {r[f'{metric}_mean']:.3g} (only `{r[factor]}` has fits)"
    hi = ok.loc[ok[f"{metric}_mean"].idxmax()]
    lo = ok.loc[ok[f"{metric}_mean"].idxmin()]
    return (f"{label} is largest for `{hi[factor]}` ({hi[f'{metric}_mean']:.3g}) and smallest "
            f"for `{lo[factor]}` ({lo[f'{metric}_mean']:.3g})")


SHAPE_METRICS = (("relative_gap", "relative gap"), ("relative_sharpness", "relative sharpness"),
                 ("absolute_sharpness", "absolute sharpness"))


def factor_reading(cells: pd.DataFrame, factor: str, *, budget: int,
                   numeric: bool = False) -> str:
    """Bullets per task: which value of ``factor`` reached 99% first and last, which never did,
    and how relative gap and both sharpness measures move with the factor."""
    lines = []
    for task, group in cells.groupby("task", sort=False):
        never = group[group["n_censored"] >= group["n_seeds"]]
        some = group[(group["n_censored"] > 0) & (group["n_censored"] < group["n_seeds"])]
        full = group[group["n_censored"] == 0].sort_values("steps_to_99_mean", kind="stable")
        parts = []
        if len(full):
            best, worst = full.iloc[0], full.iloc[-1]
            parts.append(f"`{best[factor]}` reached 99% first ({cell_steps(best)} updates)")
            if len(full) > 1:
                parts.append(f"`{worst[factor]}` last of those that grokked in every seed "
                             f"({cell_steps(worst)})")
        elif not len(some):
            parts.append(f"no setting reached 99% within {budget} updates in any seed")
        if len(some):
            parts.append("some seeds but not all grokked with "
                         + ", ".join(f"`{r[factor]}` ({grokked(r)})" for _, r in some.iterrows()))
        if len(never) and len(never) < len(group):
            parts.append(f"never reached 99% within {budget} updates: {_names(never[factor])}")
        for metric, label in SHAPE_METRICS:
            if numeric:
                values = group[f"{metric}_mean"].astype(float)
                if np.isfinite(values).sum() >= 2:
                    parts.append(f"{label} {trend(group[factor].astype(float), values)}")
            else:
                text = _extremes(group, factor, metric, label)
                if text:
                    parts.append(text)
        if not any(np.isfinite(group[f"{m}_mean"].astype(float)).any() for m, _ in SHAPE_METRICS):
            parts.append("no erf fit succeeded, so gap and sharpness are undefined")
        lines.append(f"- **{task}**: " + "; ".join(parts) + ".")
    return "\n".join(lines)


def train_fit_fraction(runs: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """Per cell (``keys``), the fraction of seeds whose training accuracy reached 99%."""
    reached = as_bool(runs["train_reached"])
    return reached.groupby([runs[k] for k in keys], sort=False).mean()

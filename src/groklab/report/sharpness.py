"""Sharpness against relative grokking gap (seed 004): the log-log fit, its figures and text.

Per run, ``relative_gap = tau_val/tau_train - 1``, ``relative_sharpness = s_val/s_train`` and
``absolute_sharpness`` (the largest slope of the fitted validation curve) come from the erf
fits. Seed 004 plots both sharpness measures against the gap, linearly and on log-log axes
with a straight-line fit there; :func:`loglog_fit` is that fit. Pure: no files, no pyplot.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from numpy.typing import ArrayLike
from scipy import stats

from groklab.report.figures import _label, _levels, _palette, _style
from groklab.report.markdown import DASH, as_bool, markdown_table

GAP = "relative_gap"
MEASURES = {"relative_sharpness": "relative sharpness s_val/s_train",
            "absolute_sharpness": "absolute sharpness (1/update)"}


@dataclass(frozen=True)
class LogLogFit:
    """``log10 y = intercept + slope * log10 x`` by least squares, and Pearson's r of the logs.

    ``n``: points used; ``n_nonpositive``: finite points left out because x or y <= 0 (no
    logarithm); ``n_missing``: points with NaN (a failed erf fit). NaN fit when ``n < 3``.
    """

    slope: float
    intercept: float
    r: float
    p_value: float
    n: int
    n_nonpositive: int
    n_missing: int

    def predict(self, x: ArrayLike) -> np.ndarray:
        return 10.0 ** self.intercept * np.asarray(x, dtype=float) ** self.slope

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.slope))


def loglog_fit(x: ArrayLike, y: ArrayLike) -> LogLogFit:
    """Straight-line fit of ``log10 y`` on ``log10 x`` over the points where both are > 0."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    finite = np.isfinite(x) & np.isfinite(y)
    keep = finite & (x > 0) & (y > 0)
    n, nonpos, missing = int(keep.sum()), int((finite & ~keep).sum()), int((~finite).sum())
    lx, ly = np.log10(x[keep]), np.log10(y[keep])
    if n < 3 or np.ptp(lx) == 0 or np.ptp(ly) == 0:  # a line through <3 points says nothing
        return LogLogFit(np.nan, np.nan, np.nan, np.nan, n, nonpos, missing)
    slope, intercept = np.polyfit(lx, ly, 1)
    r, p = stats.pearsonr(lx, ly)
    return LogLogFit(float(slope), float(intercept), float(r), float(p), n, nonpos, missing)


def log_axes(ax: Axes) -> None:
    """Log-log axes labelled with plain numbers at 1, 2 and 5 times powers of ten."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(ticker.NullFormatter())


def _draw(ax: Axes, runs: pd.DataFrame, measure: str, hue: str | None,
          colours: dict[Hashable, Any], log: bool) -> LogLogFit:
    x, y = runs[GAP].to_numpy(float), runs[measure].to_numpy(float)
    fit = loglog_fit(x, y)
    show = np.isfinite(x) & np.isfinite(y) & ((x > 0) & (y > 0) if log else True)
    for level in _levels(runs, hue):
        mask = show & ((runs[hue] == level).to_numpy() if hue else True)
        ax.scatter(x[mask], y[mask], s=22, color=colours[level], alpha=0.85, lw=0.3,
                   edgecolor="white", zorder=3)
    if log and not show.any():  # nothing to draw, and a log axis of nothing cannot be made
        ax.text(0.5, 0.5, "no run with a positive gap and sharpness", ha="center",
                transform=ax.transAxes, fontsize="small", color=".3")
    elif log:
        log_axes(ax)
        if fit.ok:
            lx = np.log10(x[show])
            grid = np.logspace(lx.min(), lx.max(), 50)
            ax.plot(grid, fit.predict(grid), color=".2", lw=1.2, ls="--", zorder=4)
            ax.text(0.02, 0.03, f"log10 y = {fit.intercept:.3g} {fit.slope:+.3g}·log10 x\n"
                    f"r = {fit.r:.3f}, n = {fit.n}"
                    + (f", {fit.n_nonpositive} ≤ 0 left out" if fit.n_nonpositive else ""),
                    transform=ax.transAxes, fontsize="x-small", va="bottom",
                    bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})
    ax.set_xlabel("relative gap τ_val/τ_train − 1" + (" (log)" if log else ""))
    ax.set_ylabel(MEASURES[measure] + (" (log)" if log else ""))
    return fit


def _legend(fig: Figure, runs: pd.DataFrame, hue: str | None, colours: dict[Hashable, Any],
            log: bool) -> None:
    handles = [Line2D([], [], color=colours[lv], marker="o", ls="", label=_label(hue, lv))
               for lv in _levels(runs, hue) if hue]
    if log:
        handles.append(Line2D([], [], color=".2", ls="--", label="least-squares line in log-log"))
    fig.legend(handles=handles, loc="outside right upper", frameon=False, fontsize="small")


def sharpness_vs_gap(runs: pd.DataFrame, *, hue: str | None, log: bool,
                     title: str | None = None) -> Figure:
    """Relative (left) and absolute (right) sharpness against relative gap, one point per run,
    coloured by ``hue``. ``log``: log-log axes (positive points only) with the fitted line."""
    colours = _palette(_levels(runs, hue))
    with _style():
        fig = Figure(figsize=(10.5, 4.2), layout="constrained")
        for ax, measure in zip(fig.subplots(1, 2), MEASURES, strict=True):
            _draw(ax, runs, measure, hue, colours, log)
        _legend(fig, runs, hue, colours, log)
        if title:
            fig.suptitle(title)
    return fig


def sharpness_panels(runs: pd.DataFrame, *, hue: str | None, title: str | None = None) -> Figure:
    """Seed 004's four panels: both sharpness measures against relative gap, linear axes (top)
    and log-log axes with the fitted line (bottom); one point per run, coloured by ``hue``."""
    colours = _palette(_levels(runs, hue))
    with _style():
        fig = Figure(figsize=(10.5, 7.6), layout="constrained")
        axes = fig.subplots(2, 2)
        for row, log in zip(axes, (False, True), strict=True):
            for ax, measure in zip(row, MEASURES, strict=True):
                _draw(ax, runs, measure, hue, colours, log)
        _legend(fig, runs, hue, colours, True)
        if title:
            fig.suptitle(title)
    return fig


def fit_table(runs: pd.DataFrame) -> str:
    """The log-log fit of each sharpness measure on relative gap, with the points it left out."""
    rows = []
    for measure in MEASURES:
        fit = loglog_fit(runs[GAP], runs[measure])
        rows.append({
            "measure": measure.replace("_", " "), "runs": len(runs), "points used": fit.n,
            "left out (≤ 0)": fit.n_nonpositive, "left out (no fit)": fit.n_missing,
            "slope": f"{fit.slope:.3g}" if fit.ok else DASH,
            "intercept (log10)": f"{fit.intercept:.3f}" if fit.ok else DASH,
            "Pearson r": f"{fit.r:.3f}" if fit.ok else DASH,
            "p": f"{fit.p_value:.2g}" if fit.ok else DASH,
        })
    return markdown_table(pd.DataFrame(rows), align=["l"] + ["r"] * 8)


def fit_table_by(runs: pd.DataFrame, by: str) -> str:
    """Both log-log fits within each ``by`` group (slope, Pearson r, points used)."""
    rows = []
    for key, g in runs.groupby(by, sort=False):
        row: dict[str, Any] = {by: key, "runs": len(g)}
        for measure in MEASURES:
            fit = loglog_fit(g[GAP], g[measure])
            short = measure.split("_")[0]
            row[f"{short}: points"] = fit.n
            row[f"{short}: slope"] = f"{fit.slope:.3g}" if fit.ok else DASH
            row[f"{short}: r"] = f"{fit.r:.3f}" if fit.ok else DASH
        rows.append(row)
    return markdown_table(pd.DataFrame(rows), align=["l"] + ["r"] * 7)


ALPHA = 0.05  # a slope whose correlation has p >= ALPHA is reported as no clear trend


def direction(fit: LogLogFit) -> str | None:
    """"falls" or "rises" when the log-log correlation is significant at :data:`ALPHA`."""
    if not fit.ok or not fit.p_value < ALPHA:
        return None
    return "falls" if fit.slope < 0 else "rises"


def fit_reading(runs: pd.DataFrame, what: str) -> str:
    """Sentences on the sign and strength of both log-log relations (``what``: the setting)."""
    out = []
    for measure in MEASURES:
        fit = loglog_fit(runs[GAP], runs[measure])
        name = measure.replace("_", " ")
        if not fit.ok:
            out.append(f"In {what}, {fit.n} runs have a positive gap and {name}, too few for "
                       "a log-log fit.")
            continue
        trend = direction(fit)
        verb = f"{trend} with relative gap" if trend else \
            f"shows no clear trend with relative gap (p = {fit.p_value:.2g} ≥ {ALPHA:g})"
        out.append(f"In {what}, {name} {verb}: log-log slope {fit.slope:.3g}, Pearson r = "
                   f"{fit.r:.3f} over {fit.n} runs"
                   + (f" ({fit.n_nonpositive} with a non-positive value left out)"
                      if fit.n_nonpositive else "") + ".")
    return " ".join(out)


def _reason(text: Any) -> str:
    """A failure reason without its numbers, so equal causes count together."""
    if not isinstance(text, str) or not text.strip():
        return "unknown"
    head = text.split(":")[0]
    head = re.sub(r"\[[^\]]*\]", "", re.sub(r"=\S+", "", head))
    return re.sub(r"\s+", " ", head).strip()


def fit_failure_table(runs: pd.DataFrame, by: str | None = None) -> str:
    """Failed erf fits per curve (training, validation) by reason, per ``by`` value."""
    groups = runs.groupby(by, sort=False) if by else [(None, runs)]
    rows = []
    for key, g in groups:
        row: dict[str, Any] = ({by: key} if by else {}) | {"runs": len(g)}
        for prefix, name in (("train_fit", "training"), ("val_fit", "validation")):
            reasons = g[f"{prefix}_reason"] if f"{prefix}_reason" in g else pd.Series("", g.index)
            failed = reasons[~as_bool(g[f"{prefix}_ok"])].map(_reason)
            counts = failed.value_counts()
            row[f"{name} fits failed"] = len(failed)
            row[f"{name} reasons"] = "; ".join(f"{r} ({n})" for r, n in counts.items()) or DASH
        rows.append(row)
    return markdown_table(pd.DataFrame(rows), align=["l"] * bool(by) + ["r", "r", "l", "r", "l"])


def positive_counts(runs: pd.DataFrame, measures: Sequence[str] = tuple(MEASURES)) -> str:
    """One sentence: how many runs can be drawn on log-log axes, and why the rest cannot."""
    gap = runs[GAP].astype(float)
    parts = [f"{int(np.isnan(gap).sum())} of {len(runs)} runs have no relative gap (a fit "
             f"failed) and {int((gap <= 0).sum())} have a gap ≤ 0"]
    for m in measures:
        parts.append(f"{int((runs[m].astype(float) <= 0).sum())} have {m.replace('_', ' ')} ≤ 0")
    return "; ".join(parts) + "."

"""Report figures: pandas DataFrames in, matplotlib Figures out.

Nothing here reads or writes files or uses pyplot: figures are plain
``matplotlib.figure.Figure`` objects (saved with the Agg renderer), so a stage can build
many of them without touching pyplot's global state or a display. The seaborn theme is
applied inside each function only, so callers' own plots keep their style.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from scipy import special

from groklab.report.markdown import as_bool

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
CENSORED_HATCH = "///"


@contextlib.contextmanager
def _style() -> Iterator[None]:
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
        yield


def _levels(df: pd.DataFrame, col: str | None) -> list[Hashable]:
    """Distinct values of ``col`` in order of appearance ([None] when there is no column)."""
    return list(dict.fromkeys(df[col])) if col else [None]


def _palette(levels: Sequence[Hashable]) -> dict[Hashable, Any]:
    """Distinct colours; an ordered (sequential) palette when every level is a number."""
    numeric = len(levels) > 1 and all(isinstance(v, numbers.Number) and not isinstance(v, bool)
                                      for v in levels)
    if numeric:  # sorted so that colour follows value (e.g. more concealed bits, darker)
        shades = sns.color_palette("viridis", len(levels) + 1)[:len(levels)]  # no pale yellow
        return dict(zip(sorted(levels), shades, strict=True))  # type: ignore[type-var]
    return dict(zip(levels, sns.color_palette("colorblind", len(levels)), strict=True))


def _label(hue: str | None, level: Hashable) -> str:
    """A legend entry: a bare number means nothing without the column it is a value of."""
    if hue and isinstance(level, numbers.Number) and not isinstance(level, bool):
        return f"{hue} = {level:g}"
    return str(level)


def _select(df: pd.DataFrame, **where: Any) -> pd.DataFrame:
    """Rows of ``df`` whose columns equal the given values; a None column name is ignored."""
    mask = np.ones(len(df), bool)
    for col, value in where.items():
        if col != "_" and value is not None:
            mask &= (df[col] == value).to_numpy()
    return df[mask]


def _col(df: pd.DataFrame, name: str) -> str:
    """``name_mean`` in a per-cell table, ``name`` itself in a per-seed table."""
    return f"{name}_mean" if f"{name}_mean" in df else name


def _panels(fig: Figure, n: int) -> list[Axes]:
    ncols = 1 if n == 1 else 2
    axes = fig.subplots(math.ceil(n / ncols), ncols, squeeze=False, sharex=True, sharey=True)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.remove()
    return flat[:n]


def _mean_fit(runs: pd.DataFrame, prefix: str, t: np.ndarray) -> np.ndarray | None:
    """Mean over seeds with a successful fit of ``a*erf(s*(t-tau))+b`` (None if none)."""
    if f"{prefix}_ok" not in runs:
        return None
    ok = runs[as_bool(runs[f"{prefix}_ok"])]
    if ok.empty:
        return None
    a, s, tau, b = (ok[f"{prefix}_{k}"].to_numpy(float)[:, None] for k in ("a", "s", "tau", "b"))
    return (a * special.erf(s * (t[None, :] - tau)) + b).mean(axis=0)


def accuracy_curves(histories: pd.DataFrame, runs: pd.DataFrame | None, *, hue: str | None,
                    col: str | None = "task", title: str | None = None, logx: bool = False,
                    xlabel: str = "updates", train_label: str = "train (batch means)"
                    ) -> Figure:
    """Accuracy against updates, one panel per ``col`` value and one colour per ``hue`` value.

    Solid: validation accuracy, dashed: training accuracy (batch means), both the mean over
    seeds with a band from the minimum to the maximum seed. Thin dotted lines: the erf fits
    ``a*erf(s*(t - tau)) + b`` of ``runs`` (per-seed fit columns), averaged over the seeds
    whose fit succeeded. ``logx`` draws a logarithmic step axis (step 0 left out).
    """
    if logx:
        histories = histories[histories["step"] > 0]
    panels, levels = _levels(histories, col), _levels(histories, hue)
    colours = _palette(levels)
    with _style():
        ncols = 1 if len(panels) == 1 else 2
        # A lone panel is drawn wider: it often carries many curves (one per factor value).
        fig = Figure(figsize=(5.2 * ncols if ncols > 1 else 6.8,
                              3.3 * math.ceil(len(panels) / ncols) + 1.0),
                     layout="constrained")
        axes = _panels(fig, len(panels))
        for ax, panel in zip(axes, panels, strict=True):
            for level in levels:
                h = _select(histories, **{col or "_": panel, hue or "_": level})
                if h.empty:
                    continue
                stats = h.groupby("step")[["val_acc", "train_acc"]].agg(["mean", "min", "max"])
                t = stats.index.to_numpy(float)
                c = colours[level]
                for metric, ls, alpha in (("val_acc", "-", 0.2), ("train_acc", "--", 0.08)):
                    ax.plot(t, stats[(metric, "mean")], color=c, ls=ls, lw=1.6)
                    ax.fill_between(t, stats[(metric, "min")], stats[(metric, "max")],
                                    color=c, alpha=alpha, lw=0)
                if runs is not None:
                    r = _select(runs, **{col or "_": panel, hue or "_": level})
                    grid = (np.geomspace(t.min(), t.max(), 300) if logx
                            else np.linspace(t.min(), t.max(), 300))
                    for prefix in ("val_fit", "train_fit"):
                        fit = _mean_fit(r, prefix, grid)
                        if fit is not None:  # darker, so the fit shows on top of its data
                            ax.plot(grid, fit, color=np.multiply(c, 0.6), ls=":", lw=1.4)
            if panel is not None:
                ax.set_title(str(panel))
            if logx:
                ax.set_xscale("log")
            ax.set_ylim(-0.02, 1.03)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("accuracy")
            ax.label_outer()
        handles = [Line2D([], [], color=colours[lv], lw=2, label=_label(hue, lv))
                   for lv in levels if hue]
        handles += [
            Line2D([], [], color=".2", ls="-", label="validation, mean of seeds"),
            Line2D([], [], color=".2", ls="--", label=f"{train_label}, mean of seeds"),
            Patch(color=".2", alpha=0.2, label="band: seed minimum to maximum"),
        ]
        if runs is not None:
            handles.append(Line2D([], [], color=".2", ls=":",
                                  label="erf fit, mean of seeds with fit ok"))
        fig.legend(handles=handles, loc="outside lower center", ncols=2 * ncols,
                   frameon=False, fontsize="small")
        if title:
            fig.suptitle(title)
    return fig


def _bars(ax: Axes, cells: pd.DataFrame, x: str, hue: str | None, metric: str,
          colours: dict[Hashable, Any], *, bound_only: pd.Series | None = None,
          clip: tuple[float, float] = (-np.inf, np.inf)) -> list[tuple[float, pd.Series, Any]]:
    """Grouped bars of ``{metric}_mean`` with 95%-interval error bars; (x, row, patch) each.

    Rows flagged in ``bound_only`` get no error bar: their mean is only a lower bound.
    Intervals are clipped to ``clip`` (an accuracy interval past 1 means nothing).
    """
    xs, levels = _levels(cells, x), _levels(cells, hue)
    width = 0.8 / len(levels)
    placed = []
    for j, level in enumerate(levels):
        for i, xv in enumerate(xs):
            rows = _select(cells, **{x: xv, hue or "_": level})
            if rows.empty:
                continue
            row = rows.iloc[0]
            pos = i - 0.4 + width * (j + 0.5)
            mean, lo, hi = (float(row.get(f"{metric}_{k}", np.nan))
                            for k in ("mean", "ci_low", "ci_high"))
            lo, hi = max(lo, clip[0]), min(hi, clip[1])
            err = [[max(mean - lo, 0)], [max(hi - mean, 0)]] if np.isfinite([lo, hi]).all() \
                else None
            if bound_only is not None and bound_only.loc[rows.index[0]]:
                err = None
            bar = ax.bar(pos, mean, width * 0.9, color=colours[level], yerr=err, capsize=2,
                         error_kw={"lw": 1, "ecolor": ".25"})
            placed.append((pos, row, bar.patches[0]))
    ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    return placed


def _hue_handles(levels: list[Hashable], colours: dict[Hashable, Any]) -> list[Any]:
    return [Patch(color=colours[lv], label=str(lv)) for lv in levels if lv is not None]


def steps_to_99(cells: pd.DataFrame, *, x: str = "task", hue: str | None = "aug",
                budget: int | None = None, title: str | None = None) -> Figure:
    """Mean updates to 99% validation accuracy per ``x`` and ``hue``, with 95% intervals.

    Seeds that never reached 99% are counted at the budget (the dashed line), so a hatched
    bar, annotated "k/n" (seeds that reached 99%), is a lower bound and has no error bar.
    """
    levels = _levels(cells, hue)
    colours = _palette(levels)
    with _style():
        width = max(6.0, 1.0 + len(_levels(cells, x)) * (0.32 * len(levels) + 0.4))
        fig = Figure(figsize=(width, 4.4), layout="constrained")
        ax = fig.subplots()
        censored = cells["n_censored"] > 0
        for pos, row, patch in _bars(ax, cells, x, hue, "steps_to_99", colours,
                                     bound_only=censored):
            n, k = int(row["n_seeds"]), int(row["n_seeds"] - row["n_censored"])
            if k < n:
                patch.set_hatch(CENSORED_HATCH)
                patch.set_edgecolor(".15")
                ax.annotate(f"{k}/{n}", (pos, row["steps_to_99_mean"]), xytext=(0, 2),
                            textcoords="offset points",
                            ha="center", va="bottom", fontsize="x-small", rotation=90)
        handles = _hue_handles(levels, colours)
        handles.append(Patch(facecolor="white", edgecolor=".15", hatch=CENSORED_HATCH,
                             label="k/n seeds reached 99%; the rest counted\n"
                                   "at the budget (mean is a lower bound)"))
        if budget is not None:
            ax.axhline(budget, color=".3", ls="--", lw=1)
            ax.set_ylim(0, budget * 1.15)
            handles.append(Line2D([], [], color=".3", ls="--", label=f"budget ({budget} updates)"))
        ax.set_xlabel(x)
        ax.set_ylabel("updates to 99% validation accuracy")
        ax.set_title(title or "Updates to 99% validation accuracy (mean, 95% interval)")
        fig.legend(handles=handles, loc="outside right upper", frameon=False, fontsize="small")
    return fig


def final_accuracy(cells: pd.DataFrame, *, x: str = "task", hue: str | None = "aug",
                   title: str | None = None) -> Figure:
    """Final training (top) and validation (bottom) accuracy after the last update.

    Bars are means over seeds with 95% intervals; both are measured on the whole split.
    """
    levels = _levels(cells, hue)
    colours = _palette(levels)
    with _style():
        width = max(6.0, 1.0 + len(_levels(cells, x)) * (0.32 * len(levels) + 0.4))
        fig = Figure(figsize=(width, 6.0), layout="constrained")
        axes = fig.subplots(2, 1, sharex=True)
        for ax, metric, name in zip(axes, ("final_train_acc", "final_val_acc"),
                                    ("training", "validation"), strict=True):
            _bars(ax, cells, x, hue, metric, colours, clip=(0.0, 1.0))
            ax.set_ylim(0, 1.05)
            ax.set_ylabel("accuracy")
            ax.set_title(f"final {name} accuracy (mean, 95% interval)")
        axes[1].set_xlabel(x)
        fig.legend(handles=_hue_handles(levels, colours), loc="outside right upper",
                   frameon=False, fontsize="small")
        if title:
            fig.suptitle(title)
    return fig


def leakage(cells: pd.DataFrame, *, hue: str | None = "aug", style: str = "task",
            title: str | None = None) -> Figure:
    """How much validation accuracy could be leakage from augmented training pairs.

    x: fraction of validation pairs reachable from the training split under the augmentation
    (``val_reachable``); filled markers: final validation accuracy; hollow markers: accuracy
    on the clean (unreachable) pairs, joined by a line. A model that knew only the reachable
    pairs would sit on the dotted diagonal. Works on per-cell (``*_mean``) or per-seed tables.
    """
    levels, shapes = _levels(cells, hue), _levels(cells, style)
    colours = _palette(levels)
    marker = dict(zip(shapes, MARKERS * (len(shapes) // len(MARKERS) + 1), strict=False))
    xcol, vcol, ccol = (_col(cells, k) for k in ("val_reachable", "final_val_acc",
                                                   "clean_val_acc"))
    with _style():
        fig = Figure(figsize=(7.5, 4.8), layout="constrained")
        ax = fig.subplots()
        ax.plot([0, 1], [0, 1], color=".5", ls=":", lw=1)
        for _, row in cells.iterrows():
            c, m = colours[row[hue] if hue else None], marker[row[style]]
            xv, val, clean = float(row[xcol]), float(row[vcol]), float(row[ccol])
            ax.scatter(xv, val, color=c, marker=m, s=40, zorder=4)
            if xv < 1:  # with every pair reachable there is no clean accuracy to show
                ax.plot([xv, xv], [clean, val], color=c, lw=1, alpha=0.6)
                # Larger and underneath: equal accuracies show as a filled marker in a ring.
                ax.scatter(xv, clean, facecolor="white", edgecolor=c, marker=m, s=110,
                           linewidths=1.3, zorder=3)
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.05)
        ax.set_xlabel("fraction of validation pairs reachable from training (val_reachable)")
        ax.set_ylabel("accuracy after the last update")
        ax.set_title(title or "Validation accuracy vs reachable (leaked) validation pairs")
        handles = _hue_handles(levels, colours)
        handles += [Line2D([], [], color=".3", marker=marker[s], ls="", label=str(s))
                    for s in shapes]
        handles += [
            Line2D([], [], color=".3", marker="o", ls="", label="validation accuracy"),
            Line2D([], [], markerfacecolor="white", markeredgecolor=".3", marker="o", ls="",
                   markersize=9, label="clean validation accuracy"),
            Line2D([], [], color=".5", ls=":", label="accuracy = reachable fraction"),
        ]
        fig.legend(handles=handles, loc="outside right upper", frameon=False, fontsize="small")
    return fig

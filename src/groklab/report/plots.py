"""Figures shared by the report's sections: pandas DataFrames in, matplotlib Figures out.

Nothing here reads or writes files or uses pyplot: figures are plain
``matplotlib.figure.Figure`` objects (saved with the Agg renderer), so a stage can build many
without touching pyplot's global state or a display. The seaborn theme is applied inside each
function only. Every legend lists only what its figure draws.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter
from matplotlib.transforms import blended_transform_factory
from scipy import special

from groklab.metrics import kaplan_meier
from groklab.report.text import as_bool, reached

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
CENSORED_HATCH = "///"
CENSORED = ("steps_to_99", "examples_to_99")  # a censored seed makes the mean a lower bound
LABELS = {"steps_to_99": "updates to 99% validation accuracy",  # axis labels of metrics
          "examples_to_99": "examples seen to 99% (updates × batch)",
          "relative_gap": "relative gap τ_val/τ_train − 1"}


@contextlib.contextmanager
def style() -> Iterator[None]:
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
        yield


def levels(df: pd.DataFrame, col: str | None) -> list[Hashable]:
    """Distinct values of ``col`` in order of appearance ([None] when there is no column)."""
    return list(dict.fromkeys(df[col])) if col else [None]


def palette(values: Sequence[Hashable]) -> dict[Hashable, Any]:
    """Distinct colours; an ordered (sequential) palette when every level is a number."""
    numeric = len(values) > 1 and all(isinstance(v, numbers.Number) and not isinstance(v, bool)
                                      for v in values)
    if numeric:  # sorted so that colour follows value (e.g. more concealed bits, darker)
        shades = sns.color_palette("viridis", len(values) + 1)[:len(values)]  # no pale yellow
        return dict(zip(sorted(values), shades, strict=True))  # type: ignore[type-var]
    colours = [c for c in sns.color_palette("colorblind") if len(set(c)) > 1]  # no grey:
    return {v: colours[i % len(colours)] for i, v in enumerate(values)}  # it means "all"


def label(hue: str | None, level: Hashable) -> str:
    """A legend entry: a bare number means nothing without the column it is a value of."""
    if hue and isinstance(level, numbers.Number) and not isinstance(level, bool):
        return f"{hue} = {level:g}"
    return str(level)


def select(df: pd.DataFrame, **where: Any) -> pd.DataFrame:
    """Rows of ``df`` whose columns equal the given values; the column name ``_`` is ignored."""
    mask = np.ones(len(df), bool)
    for col, value in where.items():
        if col != "_" and value is not None:
            mask &= (df[col] == value).to_numpy()
    return df[mask]


def legend(fig: Figure, handles: list[Any], title: str | None = None, ncols: int = 3) -> None:
    """The figure's legend below its panels and its title as a suptitle above them, which
    constrained layout keeps inside the figure and clear of each other."""
    if handles:
        fig.legend(handles=handles, frameon=False, fontsize="small", loc="outside lower center",
                   ncols=min(len(handles), ncols))
    if title:
        fig.suptitle(title)


def hue_handles(values: Sequence[Hashable], colours: Mapping[Hashable, Any],
                hue: str | None = None) -> list[Any]:
    return [Patch(color=colours[v], label=label(hue, v)) for v in values if v is not None]


def hues(df: pd.DataFrame, hue: str | None) -> tuple[list[Hashable], dict[Hashable, Any]]:
    """The ``hue`` values of ``df`` (:func:`levels`) and their colours (:func:`palette`)."""
    values = levels(df, hue)
    return values, palette(values)


def _tiled(n: int, height: float) -> tuple[Figure, list[Axes]]:
    """A figure of ``n`` panels sharing both axes, two a row (one, wider, when alone)."""
    ncols, nrows = (1, 1) if n == 1 else (2, math.ceil(n / 2))
    fig = Figure(figsize=(5.2 * ncols if ncols > 1 else 6.8, height * nrows + 1.2),
                 layout="constrained")
    flat = list(fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True).ravel())
    for ax in flat[n:]:
        ax.remove()
    return fig, flat[:n]


def _bar_width(cells: pd.DataFrame, x: str, values: Sequence[Hashable]) -> float:
    """Figure width for grouped bars: room for every ``x`` group of ``values`` bars."""
    return max(6.0, 1.0 + len(levels(cells, x)) * (0.32 * len(values) + 0.4))


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
                    xlabel: str = "updates", train_label: str = "training split") -> Figure:
    """Accuracy against updates, one panel per ``col`` value and one colour per ``hue`` value.

    Solid: validation accuracy; dashed: the training curve (accuracy on the un-augmented
    training split); both the mean over seeds with a band from the minimum to the maximum
    seed. Dotted: the erf fits of ``runs``, averaged over the seeds whose fit is ok. ``logx``
    draws a logarithmic step axis (step 0 left out).
    """
    if logx:
        histories = histories[histories["step"] > 0]
    tiles, (values, colours) = levels(histories, col), hues(histories, hue)
    fitted = banded = False
    with style():
        fig, axes = _tiled(len(tiles), 3.3)
        for ax, tile in zip(axes, tiles, strict=True):
            for value in values:
                h = select(histories, **{col or "_": tile, hue or "_": value})
                if h.empty:
                    continue
                stats = h.groupby("step")[["val_acc", "train_acc"]].agg(["mean", "min", "max"])
                t = stats.index.to_numpy(float)
                c = colours[value]
                several = h["seed"].nunique() > 1 if "seed" in h else True
                banded |= several
                for name, ls, alpha in (("val_acc", "-", 0.2), ("train_acc", "--", 0.08)):
                    ax.plot(t, stats[(name, "mean")], color=c, ls=ls, lw=1.6)
                    if several:  # one seed has no spread to draw
                        ax.fill_between(t, stats[(name, "min")], stats[(name, "max")],
                                        color=c, alpha=alpha, lw=0)
                r = None if runs is None else select(runs, **{col or "_": tile, hue or "_": value})
                grid = np.geomspace(t.min(), t.max(), 300) if logx else \
                    np.linspace(t.min(), t.max(), 300)
                for prefix in ("val_fit", "train_fit"):
                    fit = None if r is None else _mean_fit(r, prefix, grid)
                    if fit is not None:  # darker, so the fit shows on top of its data
                        ax.plot(grid, fit, color=np.multiply(c, 0.6), ls=":", lw=1.4)
                        fitted = True
            if tile is not None:
                ax.set_title(str(tile))
            if logx:
                ax.set_xscale("log")
            ax.set(ylim=(-0.02, 1.03), xlabel=xlabel, ylabel="accuracy")
            ax.label_outer()
        handles = hue_handles(values, colours, hue) if hue else []
        of = "mean of seeds" if banded else "one seed"
        handles += [Line2D([], [], color=".2", ls="-", label=f"validation, {of}"),
                    Line2D([], [], color=".2", ls="--", label=f"{train_label}, {of}")]
        if banded:
            handles.append(Patch(color=".2", alpha=0.2, label="band: seed minimum to maximum"))
        if fitted:
            handles.append(Line2D([], [], color=".2", ls=":",
                                  label="erf fit, mean of seeds with fit ok"))
        legend(fig, handles, title)
    return fig


def bars(ax: Axes, cells: pd.DataFrame, x: str, hue: str | None, name: str,
         colours: Mapping[Hashable, Any], *, clip: tuple[float, float] = (-np.inf, np.inf)
         ) -> list[tuple[float, pd.Series, Any]]:
    """Grouped bars of ``{name}_mean`` with 95%-interval error bars (none where the table has
    no interval, e.g. a censored mean); (x, row, patch) each. Intervals are clipped to
    ``clip`` (an accuracy interval past 1 means nothing)."""
    xs, values = levels(cells, x), levels(cells, hue)
    width = 0.8 / len(values)
    placed = []
    for j, value in enumerate(values):
        for i, xv in enumerate(xs):
            rows = select(cells, **{x: xv, hue or "_": value})
            if rows.empty:
                continue
            row = rows.iloc[0]
            pos = i - 0.4 + width * (j + 0.5)
            mean, lo, hi = (float(row.get(f"{name}_{k}", np.nan))
                            for k in ("mean", "ci_low", "ci_high"))
            lo, hi = max(lo, clip[0]), min(hi, clip[1])
            err = [[max(mean - lo, 0)], [max(hi - mean, 0)]] \
                if np.isfinite([lo, hi]).all() else None
            bar = ax.bar(pos, mean, width * 0.9, color=colours[value], yerr=err, capsize=2,
                         error_kw={"lw": 1, "ecolor": ".25"})
            placed.append((pos, row, bar.patches[0]))
    ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    return placed


def steps_to_99(cells: pd.DataFrame, *, x: str = "task", hue: str | None = "aug",
                budget: int | None = None, title: str | None = None) -> Figure:
    """Mean updates to 99% validation accuracy per ``x`` and ``hue``, with 95% intervals.

    Seeds that never reached 99% are counted at the budget (the dashed line), so a hatched
    bar, annotated "k/n" (seeds that reached 99%), is a lower bound and has no error bar.
    """
    values, colours = hues(cells, hue)
    with style():
        fig = Figure(figsize=(_bar_width(cells, x, values), 4.6), layout="constrained")
        ax = fig.subplots()
        hatched = False
        for pos, row, patch in bars(ax, cells, x, hue, "steps_to_99", colours):
            if row["n_censored"] > 0:
                patch.set_hatch(CENSORED_HATCH)
                patch.set_edgecolor(".15")
                hatched = True
                ax.annotate(reached(row), (pos, row["steps_to_99_mean"]), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom",
                            fontsize="x-small", rotation=90)
        handles = hue_handles(values, colours)
        if hatched:
            handles.append(Patch(facecolor="white", edgecolor=".15", hatch=CENSORED_HATCH,
                                 label="k/n seeds reached 99%; the rest counted\n"
                                       "at the budget (mean is a lower bound)"))
        if budget is not None:
            ax.axhline(budget, color=".3", ls="--", lw=1)
            ax.set_ylim(0, budget * 1.15)
            handles.append(Line2D([], [], color=".3", ls="--", label=f"budget ({budget} updates)"))
        ax.set(xlabel=x, ylabel=LABELS["steps_to_99"])
        legend(fig, handles, title or "Updates to 99% validation accuracy "
               + interval_note(cells, "steps_to_99"))
    return fig


def interval_note(cells: pd.DataFrame, *names: str) -> str:
    """"(mean, 95% interval)" when some cell has an interval of ``names``, else a note that
    none does (one seed, or censored seeds): a title must not promise an interval."""
    cols = [f"{n}_{k}" for n in names for k in ("ci_low", "ci_high")]
    have = [c for c in cols if c in cells]
    if have and np.isfinite(cells[have].to_numpy(float)).all(axis=1).any():
        return "(mean, 95% interval)"
    return "(mean; no interval: one seed or censored seeds)"


def final_accuracy(cells: pd.DataFrame, *, x: str = "task", hue: str | None = "aug",
                   title: str | None = None) -> Figure:
    """Final training (top) and validation (bottom) accuracy after the last update, means
    over seeds with 95% intervals, both measured on the whole split."""
    values, colours = hues(cells, hue)
    with style():
        fig = Figure(figsize=(_bar_width(cells, x, values), 6.0), layout="constrained")
        axes = fig.subplots(2, 1, sharex=True)
        for ax, name, split in zip(axes, ("final_train_acc", "final_val_acc"),
                                   ("training", "validation"), strict=True):
            bars(ax, cells, x, hue, name, colours, clip=(0.0, 1.0))
            ax.set(ylim=(0, 1.05), ylabel="accuracy",
                   title=f"final {split} accuracy {interval_note(cells, name)}")
        axes[1].set_xlabel(x)
        legend(fig, hue_handles(values, colours), title or "Final accuracy on the whole splits")
    return fig


def leakage(cells: pd.DataFrame, *, hue: str = "aug", shape: str = "task",
            title: str | None = None) -> Figure:
    """How much validation accuracy could be leakage from augmented training pairs.

    x: fraction of validation pairs reachable from the training split (``val_reachable``);
    filled markers: final validation accuracy; hollow markers, joined by a line: accuracy on
    the clean (unreachable) pairs, where there are any. Colour: ``hue``; marker: ``shape``.
    """
    (values, colours), shapes = hues(cells, hue), levels(cells, shape)
    marker = dict(zip(shapes, MARKERS * (len(shapes) // len(MARKERS) + 1), strict=False))
    with style():
        fig = Figure(figsize=(7.5, 4.8), layout="constrained")
        ax = fig.subplots()
        ax.plot([0, 1], [0, 1], color=".5", ls=":", lw=1)
        for _, row in cells.iterrows():
            c, m = colours[row[hue]], marker[row[shape]]
            xv, val = float(row["val_reachable_mean"]), float(row["final_val_acc_mean"])
            clean = float(row["clean_val_acc_mean"])
            ax.plot([xv], [val], color=c, marker=m, ls="", ms=6.5, zorder=4)
            if np.isfinite(clean):  # NaN: every validation pair is reachable, none is clean
                ax.plot([xv, xv], [clean, val], color=c, lw=1, alpha=0.6)
                ax.plot([xv], [clean], ls="", marker=m, ms=10.5, mfc="white", mec=c, mew=1.3,
                        zorder=3)
        ax.set(xlim=(-0.03, 1.03), ylim=(-0.03, 1.05),
               xlabel="fraction of validation pairs reachable from training (val_reachable)",
               ylabel="accuracy after the last update\n(filled: all validation pairs; "
                      "hollow: clean pairs)")
        handles = hue_handles(values, colours)
        handles += [Line2D([], [], color=".3", marker=marker[s], ls="", label=str(s))
                    for s in shapes]
        handles.append(Line2D([], [], color=".5", ls=":", label="accuracy = reachable fraction"))
        legend(fig, handles, title or "Validation accuracy vs reachable (leaked) validation pairs")
    return fig


def metric_vs_factor(cells: pd.DataFrame, x: str, names: Sequence[str], *,
                     hue: str | None = "task", logx: bool = False,
                     limits: Mapping[str, pd.Series | float] | None = None,
                     notes: Mapping[Any, str] | None = None, title: str | None = None) -> Figure:
    """One panel per metric: ``{name}_mean`` against ``x``, with 95% intervals, a line per
    ``hue`` value; axes labelled by :data:`LABELS`.

    For steps-like metrics (:data:`CENSORED`) a cell where some seed never reached 99% is
    drawn hollow, without an interval and annotated ``k/n`` (its mean is a lower bound).
    ``limits``: per metric, a budget to draw dashed (a number, or a Series indexed by ``x``).
    ``notes``: text to mark at given ``x`` values on every panel.
    """
    limits, notes = limits or {}, notes or {}
    values, colours = hues(cells, hue)
    hollow = False
    with style():
        fig = Figure(figsize=(4.6 * len(names) + 1.8, 4.2), layout="constrained")
        axes = fig.subplots(1, len(names), squeeze=False)[0]
        for ax, name in zip(axes, names, strict=True):
            for value in values:
                c = select(cells, **{hue or "_": value}).sort_values(x)
                xs, mean = c[x].to_numpy(float), c[f"{name}_mean"].to_numpy(float)
                lo, hi = (c[f"{name}_{k}"].to_numpy(float) for k in ("ci_low", "ci_high"))
                bound = (c["n_censored"] > 0).to_numpy() & (name in CENSORED)
                colour = colours[value]
                ax.plot(xs, mean, color=colour, lw=1.4, zorder=2)
                err = np.array([mean - lo, hi - mean])
                err[:, bound | ~np.isfinite(err).all(axis=0)] = 0
                ax.errorbar(xs[~bound], mean[~bound], yerr=err[:, ~bound], fmt="o",
                            color=colour, capsize=3, ms=5, zorder=3)
                if bound.any():
                    hollow = True
                    ax.plot(xs[bound], mean[bound], ls="", marker="o", mfc="white", mec=colour,
                            ms=6, mew=1.4, zorder=4)
                for _, row in c[bound].iterrows():
                    ax.annotate(reached(row), (row[x], row[f"{name}_mean"]), xytext=(4, 4),
                                textcoords="offset points", fontsize="x-small")
            limit = limits.get(name)
            if isinstance(limit, pd.Series):
                ax.plot(limit.index.to_numpy(float), limit.to_numpy(float), color=".4", ls="--",
                        lw=1)
            elif limit is not None:
                ax.axhline(float(limit), color=".4", ls="--", lw=1)
            trans = blended_transform_factory(ax.transData, ax.transAxes)
            for xv, text in notes.items():
                ax.axvline(float(xv), color=".6", ls=":", lw=1)
                ax.text(float(xv), 0.98, f" {text}", transform=trans, va="top", ha="left",
                        fontsize="x-small", color=".3")
            ticks = sorted(set(cells[x].astype(float)))
            if logx and len(ticks) > 1:  # one value: nothing to spread on a log axis
                ax.set_xscale("log", base=2)
                ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set(xlabel=x, ylabel=LABELS.get(name, name.replace("_", " ")))
        handles = [Line2D([], [], color=colours[v], marker="o", label=label(hue, v))
                   for v in values if hue]
        point = ("mean, 95% interval" if interval_note(cells, *names) == "(mean, 95% interval)"
                 else "mean (no interval: one seed or censored)")
        handles.append(Line2D([], [], color=".3", marker="o", ls="", label=point))
        if hollow:
            handles.append(Line2D([], [], marker="o", ls="", mfc="white", mec=".3",
                                  label="k/n seeds reached 99%;\nmean is a lower bound"))
        if limits:
            handles.append(Line2D([], [], color=".4", ls="--", label="budget"))
        legend(fig, handles, title)
    return fig


def fraction_reached(runs: pd.DataFrame, *, hue: str, col: str = "task",
                     title: str | None = None, time_col: str = "steps_to_99",
                     reached_col: str = "grokked",
                     ylabel: str = "fraction of seeds at 99%") -> Figure:
    """Kaplan-Meier estimate of the fraction of seeds whose validation accuracy reached 99%
    (or another event: ``time_col``, observed where ``reached_col``) by each update
    (:func:`groklab.metrics.kaplan_meier`), a step line per ``hue`` value and a panel per
    ``col`` value; each line ends at its cell's budget."""
    tiles, (values, colours) = levels(runs, col), hues(runs, hue)
    with style():
        fig, axes = _tiled(len(tiles), 3.0)
        for ax, tile in zip(axes, tiles, strict=True):
            for value in values:
                r = select(runs, **{col: tile, hue: value})
                if r.empty:
                    continue
                km = kaplan_meier(r[time_col].astype(float), as_bool(r[reached_col]))
                end = float(r["budget"].max())
                t = np.concatenate([[0.0], km.times, [end]])
                y = np.concatenate([[0.0], km.fraction, [km.at(end)]])
                ax.step(t, y, where="post", color=colours[value], lw=1.6)
            ax.set(title=str(tile), ylim=(-0.03, 1.05), xlabel="updates", ylabel=ylabel)
            ax.label_outer()
        legend(fig, [Line2D([], [], color=colours[v], label=label(hue, v)) for v in values],
               title or "Fraction of seeds whose validation accuracy reached 99% (Kaplan-Meier)")
    return fig

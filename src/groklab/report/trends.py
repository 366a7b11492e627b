"""Figures of per-cell metrics against a numeric factor (training fraction, batch size, ...).

Pure: a ``*_cells.csv`` table in, a matplotlib Figure out (see :mod:`.figures`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import blended_transform_factory

from groklab.report.figures import _label, _levels, _palette, _style

# Steps-like metrics: a cell with a censored seed has only a lower bound for its mean.
CENSORED = ("steps_to_99", "examples_to_99")


def metric_vs_factor(cells: pd.DataFrame, x: str, metrics: Sequence[str], *,
                     hue: str | None = "task", labels: Mapping[str, str] | None = None,
                     limits: Mapping[str, pd.Series | float] | None = None,
                     notes: Mapping[Any, str] | None = None, logx: bool = False,
                     logy: Sequence[str] = (), title: str | None = None) -> Figure:
    """One panel per metric: ``{metric}_mean`` against ``x``, with 95% intervals, a line per
    ``hue`` value.

    For steps-like metrics (:data:`CENSORED`) a cell where some seed never reached 99% is
    drawn hollow, without an interval and annotated ``k/n`` (its mean is a lower bound).
    ``limits``: per metric, a budget to draw dashed (a number, or a Series indexed by ``x``
    when it changes with ``x``). ``notes``: text to mark at given ``x`` values on every panel.
    """
    labels, limits, notes = labels or {}, limits or {}, notes or {}
    levels = _levels(cells, hue)
    colours = _palette(levels)
    with _style():
        fig = Figure(figsize=(4.6 * len(metrics) + 1.6, 4.0), layout="constrained")
        axes = fig.subplots(1, len(metrics), squeeze=False)[0]
        for ax, metric in zip(axes, metrics, strict=True):
            for level in levels:
                c = cells if hue is None else cells[cells[hue] == level]
                c = c.sort_values(x)
                xs, mean = c[x].to_numpy(float), c[f"{metric}_mean"].to_numpy(float)
                lo, hi = (c[f"{metric}_{k}"].to_numpy(float) for k in ("ci_low", "ci_high"))
                bound = ((c["n_censored"] > 0).to_numpy() if metric in CENSORED
                         else np.zeros(len(c), bool))
                colour = colours[level]
                ax.plot(xs, mean, color=colour, lw=1.4, zorder=2)
                err = np.array([mean - lo, hi - mean])
                err[:, bound | ~np.isfinite(err).all(axis=0)] = 0
                ax.errorbar(xs[~bound], mean[~bound], yerr=err[:, ~bound], fmt="o",
                            color=colour, capsize=3, ms=5, zorder=3)
                ax.scatter(xs[bound], mean[bound], facecolor="white", edgecolor=colour,
                           s=36, lw=1.4, zorder=4)
                for xv, m, (_, row) in zip(xs[bound], mean[bound], c[bound].iterrows(),
                                           strict=True):
                    k, n = int(row["n_seeds"] - row["n_censored"]), int(row["n_seeds"])
                    ax.annotate(f"{k}/{n}", (xv, m), xytext=(4, 4), textcoords="offset points",
                                fontsize="x-small")
            limit = limits.get(metric)
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
            if logx:
                ax.set_xscale("log", base=2)
                ax.set_xticks(sorted(set(cells[x].astype(float))),
                              [f"{v:g}" for v in sorted(set(cells[x].astype(float)))])
            if metric in logy:
                ax.set_yscale("log")
            ax.set_xlabel(x)
            ax.set_ylabel(labels.get(metric, metric.replace("_", " ")))
        handles = [Line2D([], [], color=colours[lv], marker="o", label=_label(hue, lv))
                   for lv in levels if hue]
        handles.append(Line2D([], [], color=".3", marker="o", ls="", label="mean, 95% interval"))
        if any(m in CENSORED for m in metrics):
            handles.append(Line2D([], [], marker="o", ls="", markerfacecolor="white",
                                  markeredgecolor=".3",
                                  label="k/n seeds reached 99%;\nmean is a lower bound"))
        if limits:
            handles.append(Line2D([], [], color=".4", ls="--", label="budget"))
        fig.legend(handles=handles, loc="outside right upper", frameon=False, fontsize="small")
        if title:
            fig.suptitle(title)
    return fig

"""The sharpness of grokking (the sharpness paper): concealed parity, the linear student-teacher
model, and every modular-arithmetic run pooled, each run once.

Per run, ``relative_gap = tau_val/tau_train - 1``, ``relative_sharpness = s_val/s_train`` and
``absolute_sharpness`` (the largest slope of the fitted validation curve) come from the erf
fits. Seed 004 plots both sharpness measures against the gap, linearly and on log-log axes
with a straight-line fit there (:func:`groklab.metrics.loglog_fit`). Claims from
``references/sharpness_paper_claims.json``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from groklab.cells import studies
from groklab.metrics import RANK_EXACT_MAX, LogLogFit, loglog_fit, rank_trend, trend
from groklab.report import plots
from groklab.report import study as st
from groklab.report import text as tx
from groklab.report.context import Context, Section, StudyTables, flat_settings

REF = "sharpness_paper_claims"
GAP = "relative_gap"
MEASURES = {"relative_sharpness": "relative sharpness s_val/s_train",
            "absolute_sharpness": "absolute sharpness (1/update)"}
MODULAR_TASKS = ("x_plus_y", "x_minus_y", "x_div_y", "x_mul_y", "permutation", "multi_add")
ALPHA = 0.05  # a log-log slope whose correlation has p >= ALPHA is reported as no clear trend


# --- Figures -------------------------------------------------------------------------------

def _log_axes(ax: Axes) -> None:
    """Log-log axes labelled with plain numbers at 1, 2 and 5 times powers of ten."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(ticker.NullFormatter())


def _draw(ax: Axes, runs: pd.DataFrame, measure: str, hue: str | None,
          colours: Mapping[Hashable, Any], log: bool) -> tuple[set[Hashable], bool]:
    """One panel; returns the ``hue`` values it drew points of and whether it drew a fit."""
    x, y = runs[GAP].to_numpy(float), runs[measure].to_numpy(float)
    show = np.isfinite(x) & np.isfinite(y) & ((x > 0) & (y > 0) if log else True)
    drawn = set()
    for value in plots.levels(runs, hue):
        mask = show & ((runs[hue] == value).to_numpy() if hue else True)
        if mask.any():
            ax.plot(x[mask], y[mask], ls="", marker="o", ms=4.5, color=colours[value],
                    alpha=0.85, mec="white", mew=0.3, zorder=3)
            drawn.add(value)
    fit = loglog_fit(x, y)
    if log and not show.any():  # nothing to draw, and a log axis of nothing cannot be made
        ax.text(0.5, 0.5, "no run with a positive gap and sharpness", ha="center",
                transform=ax.transAxes, fontsize="small", color=".3")
    elif log:
        _log_axes(ax)
        if fit.ok:
            grid = np.logspace(*np.log10([x[show].min(), x[show].max()]), 50)
            ax.plot(grid, fit.predict(grid), color=".2", lw=1.2, ls="--", zorder=4)
            ax.text(0.02, 0.03, f"log10 y = {fit.intercept:.3g} {fit.slope:+.3g}·log10 x\n"
                    f"r = {fit.r:.3f}, n = {fit.n}"
                    + (f", {fit.n_nonpositive} ≤ 0 left out" if fit.n_nonpositive else ""),
                    transform=ax.transAxes, fontsize="x-small", va="bottom",
                    bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})
    ax.set(xlabel=plots.LABELS[GAP] + (" (log)" if log else ""),
           ylabel=MEASURES[measure] + (" (log)" if log else ""))
    return drawn, bool(log and fit.ok and show.any())


def sharpness_figure(runs: pd.DataFrame, *, hue: str | None, logs: tuple[bool, ...] = (False, True),
                     title: str | None = None) -> Figure:
    """Both sharpness measures (columns) against relative gap, one point per run coloured by
    ``hue``; one row of panels per entry of ``logs`` (True: log-log axes, positive points
    only, with the fitted line). The legend lists the ``hue`` values that have points."""
    values, colours = plots.hues(runs, hue)
    drawn: set[Hashable] = set()
    fitted = False
    with plots.style():
        fig = Figure(figsize=(10.5, 3.8 * len(logs) + 0.6), layout="constrained")
        axes = fig.subplots(len(logs), 2, squeeze=False)
        for row, log in zip(axes, logs, strict=True):
            for ax, measure in zip(row, MEASURES, strict=True):
                levels_drawn, line = _draw(ax, runs, measure, hue, colours, log)
                drawn |= levels_drawn
                fitted |= line
        handles = [Line2D([], [], color=colours[v], marker="o", ls="", label=plots.label(hue, v))
                   for v in values if hue and v in drawn]
        if fitted:
            handles.append(Line2D([], [], color=".2", ls="--",
                                  label="least-squares line in log-log"))
        plots.legend(fig, handles, title)
    return fig


# --- Tables and readings -------------------------------------------------------------------

def _fit_cells(fit: LogLogFit) -> dict[str, str]:
    cells = {"slope": f"{fit.slope:.3g}", "intercept (log10)": f"{fit.intercept:.3f}",
             "Pearson r": f"{fit.r:.3f}", "p": f"{fit.p_value:.2g}"}
    return cells if fit.ok else dict.fromkeys(cells, tx.DASH)


def fit_table(runs: pd.DataFrame) -> str:
    """The log-log fit of each sharpness measure on relative gap, with the points it left out;
    ``N`` counts distinct runs (configuration and seed)."""
    rows = []
    for measure in MEASURES:
        fit = loglog_fit(runs[GAP], runs[measure])
        rows.append({"measure": measure.replace("_", " "), "N (distinct runs)": st.distinct(runs),
                     "points used": fit.n, "left out (≤ 0)": fit.n_nonpositive,
                     "left out (no fit)": fit.n_missing, **_fit_cells(fit)})
    return tx.markdown_table(pd.DataFrame(rows), align=["l"] + ["r"] * 8)


def fit_table_by(runs: pd.DataFrame, by: str) -> str:
    """Both log-log fits within each ``by`` group (slope, Pearson r, points used)."""
    rows = []
    for key, g in runs.groupby(by, sort=False):
        row: dict[str, Any] = {by: key, "N": st.distinct(g)}
        for measure in MEASURES:
            fit, short = loglog_fit(g[GAP], g[measure]), measure.split("_")[0]
            shown = _fit_cells(fit)
            row |= {f"{short}: points": fit.n, f"{short}: slope": shown["slope"],
                    f"{short}: r": shown["Pearson r"]}
        rows.append(row)
    return tx.markdown_table(pd.DataFrame(rows), align=["l"] + ["r"] * 7)


def fit_failure_table(runs: pd.DataFrame, by: str | None = None) -> str:
    """Failed erf fits per curve (training, validation) by reason, per ``by`` value."""
    groups = runs.groupby(by, sort=False) if by else [(None, runs)]
    rows = []
    for key, g in groups:
        row: dict[str, Any] = ({by: key} if by else {}) | {"runs": len(g)}
        for prefix, name in st.FIT_CURVES:
            counts = st.failed_fits(g, prefix)
            row[f"{name} fits failed"] = int(counts.sum())
            row[f"{name} reasons"] = "; ".join(f"{r} ({n})" for r, n in counts.items()) or tx.DASH
        rows.append(row)
    return tx.markdown_table(pd.DataFrame(rows), align=["l"] * bool(by) + ["r", "r", "l", "r", "l"])


def positive_counts(runs: pd.DataFrame) -> str:
    """One sentence: how many runs can be drawn on log-log axes, and why the rest cannot."""
    gap = runs[GAP].astype(float)
    parts = [f"{int(np.isnan(gap).sum())} of {len(runs)} runs have no relative gap (a fit "
             f"failed) and {int((gap <= 0).sum())} have a gap ≤ 0"]
    parts += [f"{int((runs[m].astype(float) <= 0).sum())} have {m.replace('_', ' ')} ≤ 0"
              for m in MEASURES]
    return "; ".join(parts) + "."


def direction(fit: LogLogFit) -> str | None:
    """"falls" or "rises" when the log-log correlation is significant at :data:`ALPHA`."""
    if not fit.ok or not fit.p_value < ALPHA:
        return None
    return "falls" if fit.slope < 0 else "rises"


def fit_verdicts(runs: pd.DataFrame, what: str, cause: str) -> list[tx.Verdict]:
    """Both log-log relations against the sharpness paper's claim that both sharpness measures
    fall as the relative gap grows (a falling slope with p < :data:`ALPHA` agrees)."""
    out = []
    for measure in MEASURES:
        fit, name = loglog_fit(runs[GAP], runs[measure]), measure.replace("_", " ")
        way = direction(fit)  # None: no fit, or no significant trend
        if not fit.ok:
            ours = (f"In {what}, {fit.n} runs have a positive gap and {name}, too few for a "
                    "log-log fit")
        else:
            ours = (f"In {what}, {name} "
                    + (f"{way} with relative gap" if way else "shows no clear trend with "
                       f"relative gap (p = {fit.p_value:.2g} ≥ {ALPHA:g})")
                    + f": log-log slope {fit.slope:.3g}, Pearson r = {fit.r:.3f} over {fit.n} "
                    "runs" + (f" ({fit.n_nonpositive} with a non-positive value left out)"
                              if fit.n_nonpositive else ""))
        out.append(tx.Verdict(ours, "the sharpness paper says it falls",
                              None if way is None else way == "falls", cause,
                              basis="Pearson test of the log-log fit at 0.05"))
    return out


def gap_verdict(runs: pd.DataFrame, factor: str, claim: str, cause: str) -> tx.Verdict:
    """The claim that the relative gap rises with ``factor``, on Spearman's rho over runs."""
    gap = rank_trend(runs[factor], runs[GAP])
    if tx.missing(gap.rho):
        said = (f"Spearman ρ undefined ({gap.n} runs with a gap: fewer than 3, or every value "
                "the same)")
    else:
        exact = "exact" if gap.n <= RANK_EXACT_MAX else "asymptotic"
        said = (f"Spearman ρ = {gap.rho:.2f} (p {tx.p_eq(gap.p_value)}, {exact}; {gap.n} runs "
                "with a gap)")
    return tx.Verdict(f"Per run, relative gap against {factor}: {said}", claim,
                      None if gap.direction is None else gap.direction == "rises", cause,
                      basis="Spearman rank test at 0.05")


def sharpness_block(ctx: Context, runs: pd.DataFrame | None, name: str, hue: str, what: str,
                    title: str, claim: bool | None, cause: str = "") -> list[str]:
    if runs is None:
        return ["", "_No per-run table: the sharpness figures need it._"]
    fig = sharpness_figure(runs, hue=hue, title=title)
    verdicts = fit_verdicts(runs, what, cause)
    return ["", "### Sharpness against relative gap", "",
            ctx.figure(f"{name}_sharpness", fig, title), "",
            f"One point per run (seed × {hue}). Log-log fit of log10(sharpness) on "
            "log10(relative gap), over runs where both are positive:", "", fit_table(runs), "",
            positive_counts(runs), "",
            *tx.bullets(verdicts if claim else [f"{v.ours}." for v in verdicts])]


# --- Concealed parity ------------------------------------------------------------------------

def replacement_overlap(bits: int, n_train: int) -> float:
    """Expected fraction of validation rows whose vector also occurs in training when each of
    ``n_train`` training rows draws one of ``2**bits`` vectors uniformly with replacement."""
    return 1.0 - (1.0 - 2.0 ** -bits) ** n_train


def concealment_body(ctx: Context, tables: StudyTables) -> list[str]:
    cells, runs, budget = tables.cells, tables.runs, ctx.budget("concealment")
    spec, quoted = st.claims(ctx, REF, "concealment")
    data = studies(ctx.params)["concealment"].settings.get("data", {})
    k = int(data.get("parity_bits", ctx.params["data"]["parity_bits"]))
    m = int(data.get("parity_examples", ctx.params["data"]["parity_examples"]))
    n_train = {} if runs is None else runs.groupby("concealed_bits")["n_train"].first().to_dict()
    overlap = {n: replacement_overlap(k + int(n), int(t)) for n, t in n_train.items()}
    extra = {"vectors": lambda c: f"{min(2 ** (k + int(c['concealed_bits'])), m)} of "
                                  f"{2 ** (k + int(c['concealed_bits']))}",
             "val_in_train": lambda c: tx.metric(c, "val_in_train"),
             "with replacement": lambda c: tx.fmt_sig(overlap.get(c["concealed_bits"]))}
    fig = plots.metric_vs_factor(cells, "concealed_bits", ["steps_to_99", "relative_gap"],
                                 limits={"steps_to_99": budget}, hue=None,
                                 title="Concealed parity: updates to 99% and relative gap")
    leak = float(runs["val_in_train"].max()) if runs is not None else 0.0
    cause = (f"validation rows repeat training rows (`val_in_train` up to {leak:.2f})" if leak
             else "not a leak (`val_in_train` = 0); at small n there are only 2^(k+n) distinct "
             "vectors, so those cells train on few examples")
    lines = [
        "Chance accuracy is 0.5 (two classes), so the erf fits run from 0.5 to 1. Each seed "
        f"draws {m} *distinct* bit vectors (all 2^(k+n) of them when there are fewer: "
        "`vectors`), so no validation input occurs in training (`val_in_train`). Drawing them "
        "with replacement instead (our earlier protocol) repeats vectors across the split: "
        "`with replacement` is the expected fraction of validation rows whose vector would "
        f"then be a training row, 1 − (1 − 2^−(k+n))^n_train. {spec.get('protocol', '')}", "",
        st.study_table(cells, "concealed_bits", extra=extra), *st.notes(ctx, tables, budget), "",
        ctx.figure("concealment_gap", fig, "Steps to 99% and relative gap vs concealed bits"),
        *sharpness_block(ctx, runs, "concealment", "concealed_bits", "the concealment runs",
                         "Concealed parity: sharpness vs relative gap",
                         spec.get("sharpness_falls_with_gap"), cause),
        *st.curves(ctx, tables, "concealment", "concealed_bits",
                   "Concealed parity: accuracy vs updates per n"),
        *st.published(quoted),
        *st.reading(cells, "concealed_bits", budget, tables, numeric=True)]
    if runs is not None and spec.get("gap_rises_with_concealed_bits"):
        claim = ("the sharpness paper (after Miller et al.) says spurious bits reliably "
                 "increase the gap")
        lines += ["", f"- {gap_verdict(runs, 'concealed_bits', claim, cause)}"]
    return lines


# --- The linear student-teacher model -------------------------------------------------------

LT_METRICS = (("relative_gap", "relative gap"), ("relative_sharpness", "relative sharpness"),
              ("absolute_sharpness", "absolute sharpness"), ("train_mid_step", "train midpoint"),
              ("val_mid_step", "val midpoint"))


def linear_teacher_intro(ctx: Context) -> list[str]:
    spec = ctx.params["studies"].get("linear_teacher")
    text = ("The solvable linear student-teacher model of Levi et al. (2023), as in the "
            "sharpness paper: a linear student trained by gradient descent on d_in/λ examples "
            "of a linear teacher; an example is correct when its squared error is below a "
            "threshold. **Varied:** λ = d_in/n_train. Validation accuracy is the expectation "
            "over fresh inputs, so no validation input is a training input.")
    return [text + (f" **Settings** (`studies.linear_teacher`): {flat_settings(spec)}."
                    if spec else "")]


def linear_teacher_body(ctx: Context, tables: StudyTables) -> list[str]:
    cells, runs = tables.cells, tables.runs
    spec, quoted = st.claims(ctx, REF, "linear_teacher")
    rows = [{"λ": f"{c['lam']:g}", **{label: tx.metric(c, m) for m, label in LT_METRICS},
             "groks": tx.count(c, "n_groks"), "fits ok": tx.count(c, "n_fit_ok")}
            for _, c in cells.iterrows()]
    lines = [tx.markdown_table(pd.DataFrame(rows), align=["l"] + ["r"] * (len(LT_METRICS) + 2)),
             "", f"A seed groks when validation reaches 99% at least "
             f"{ctx.analysis.grok_delay} gradient-descent updates after training did; an erf "
             f"fit counts only with R² ≥ {ctx.analysis.min_fit_r2:g}."]
    if runs is not None:
        lines += ["", "Fit failures:", "", fit_failure_table(runs)]
    lines += [f"\n_{note}_" for note in tables.notes]
    lines += sharpness_block(ctx, runs, "linear_teacher", "lam", "the linear-teacher runs",
                             "Linear student-teacher: sharpness vs relative gap",
                             spec.get("sharpness_falls_with_gap"),
                             "the model and its fitting window are ours; the sharpness "
                             "paper prints its coefficients only inside figures")
    if tables.histories is not None:
        fig = plots.accuracy_curves(tables.histories, None, hue="lam", col=None, logx=True,
                                    xlabel="gradient-descent steps (log)", train_label="train",
                                    title="Linear student-teacher: accuracy vs steps per λ")
        lines += ["", ctx.figure("linear_teacher_curves", fig, "Accuracy curves per λ")]
    lines += [*st.published(quoted), "", "### Reading", ""]
    lam = cells["lam"].astype(float)
    for name, label in LT_METRICS[:3]:
        lines.append(f"- As λ grows, mean {label} "
                     f"{tx.describe_trend(trend(lam, cells[f'{name}_mean'].astype(float)))} "
                     f"{tx.NOT_TESTED}.")
    if runs is not None and spec.get("gap_rises_with_lam"):
        verdict = gap_verdict(runs, "lam",
                              "the sharpness paper moves λ toward 1 to increase the gap",
                              "a fitting window that cuts the slow rises")
        lines.append(f"- {verdict}")
    return lines


# --- Every modular-arithmetic run, once --------------------------------------------------------

def modular_runs(ctx: Context) -> tuple[pd.DataFrame, int] | None:
    """Every distinct run of a modular-arithmetic task over the experiment and all studies,
    once each (by ``run_key``), labelled by the family that trained it (``source``): a base
    run that several studies read is ``baseline``; and the number of table rows they fill."""
    frames = [t.runs[t.runs["task"].isin(MODULAR_TASKS)] for t in ctx.studies.values()
              if t is not None and t.runs is not None and "task" in t.runs]
    frames = [f for f in frames if len(f)]
    if not frames:
        return None
    rows = pd.concat(frames, ignore_index=True)
    runs = rows.drop_duplicates("run_key") if "run_key" in rows else rows
    return (runs.assign(trained_by=runs["source"].str.split("@").str[0]).reset_index(drop=True),
            len(rows))


def modular_intro(ctx: Context) -> list[str]:
    return [f"Every run of a modular-arithmetic task ({', '.join(MODULAR_TASKS)}) in the "
            "experiment and every study, one point per distinct run (configuration and seed), "
            "coloured by the stage family that trained it: both sharpness measures against the "
            "relative gap on log-log axes (points ≤ 0 cannot be drawn and are counted below)."]


def modular_body(ctx: Context, tables: StudyTables | None) -> list[str]:
    pooled = modular_runs(ctx)
    if pooled is None:
        return ["_Skipped: no per-run table of a modular-arithmetic study exists yet._"]
    (runs, rows), quoted = pooled, st.claims(ctx, REF, "pooled")[1]
    title = "All modular-arithmetic runs: sharpness vs relative gap (log-log)"
    fig = sharpness_figure(runs, hue="trained_by", logs=(True,), title=title)
    return [ctx.figure("modular_sharpness", fig, title), "",
            f"{st.distinct(runs)} distinct runs (each configuration and seed once) from {rows} "
            f"table rows: a base run is one run however many studies read it. Pooled log-log "
            "fit:", "", fit_table(runs), "", positive_counts(runs), "",
            "Per family that trained the runs:", "", fit_table_by(runs, "trained_by"), "",
            "Failed erf fits by reason (a run without both fits has no gap or relative "
            "sharpness):", "", fit_failure_table(runs, by="trained_by"),
            *st.published(quoted), "", "### Reading", "",
            *tx.bullets(fit_verdicts(runs, "all modular-arithmetic runs pooled",
                                     "pooling tasks and factors whose gaps and sharpness "
                                     "differ in scale"))]


SECTIONS = (
    Section("concealment", "Concealment study", concealment_body),
    Section("linear_teacher", "Linear student-teacher study", linear_teacher_body,
            linear_teacher_intro),
    Section(None, "Sharpness across all modular-arithmetic runs", modular_body, modular_intro),
)

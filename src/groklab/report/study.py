"""Pieces every study section uses: its table, the notes on censoring, grokking, collapse,
fits and leakage, the comparison of each cell with the study's default, and a reading of
the numbers. Every sentence states something computed from the rows it is given.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from groklab.cells import studies
from groklab.config import ConfigError
from groklab.metrics import trend
from groklab.report import plots
from groklab.report import text as tx
from groklab.report.context import Context, StudyTables

Column = Callable[[pd.Series], str]


def _delay(c: pd.Series) -> str:
    mean = c.get("grok_delay_steps_mean")
    if tx.missing(mean):
        return tx.DASH
    censored = int(c.get("n_grok_delay_censored", 0) or 0)
    return f"≥ {mean:.0f}" if censored else tx.metric(c, "grok_delay_steps", 0)


# Column name -> formatter of one cell row; sections pick the columns they need.
COLUMNS: dict[str, Column] = {
    "steps to 99%": tx.cell_steps,
    "reached 99%": tx.reached,
    "groks": lambda c: tx.count(c, "n_groks"),
    "grok delay": _delay,
    "collapsed": lambda c: tx.count(c, "n_collapsed"),
    "final train acc": lambda c: tx.metric(c, "final_train_acc", 3),
    "final val acc": lambda c: tx.metric(c, "final_val_acc", 3),
    "final train loss": lambda c: tx.metric(c, "final_train_loss"),
    "final val loss": lambda c: tx.metric(c, "final_val_loss"),
    "relative gap": lambda c: tx.metric(c, "relative_gap"),
    "relative sharpness": lambda c: tx.metric(c, "relative_sharpness"),
    "absolute sharpness": lambda c: tx.metric(c, "absolute_sharpness"),
    "fits ok": lambda c: tx.count(c, "n_fit_ok"),
}
DEFAULT_COLUMNS = ("steps to 99%", "reached 99%", "groks", "grok delay", "final train acc",
                   "final val acc", "relative gap", "relative sharpness", "absolute sharpness",
                   "fits ok")


def study_table(cells: pd.DataFrame, factor: str, columns: Sequence[str] = DEFAULT_COLUMNS,
                extra: dict[str, Column] | None = None) -> str:
    """One row per cell: task, the factor's value, then ``columns`` (names of :data:`COLUMNS`)
    and ``extra`` columns (name -> formatter of a cell row)."""
    formatters = {name: COLUMNS[name] for name in columns} | (extra or {})
    keys = [k for k in dict.fromkeys(("task", factor)) if k in cells]
    rows = [{**{k: c[k] for k in keys}, **{name: f(c) for name, f in formatters.items()}}
            for _, c in cells.iterrows()]
    return tx.markdown_table(pd.DataFrame(rows),
                             align=["l"] * len(keys) + ["r"] * len(formatters))


def steps_pivot(cells: pd.DataFrame, *, col: str, row: str = "task") -> str:
    """Steps to 99% with ``row`` values down and ``col`` values across."""
    table = cells.assign(steps=[tx.cell_steps(c) for _, c in cells.iterrows()])
    wide = table.pivot(index=row, columns=col, values="steps")
    wide = wide.loc[list(dict.fromkeys(cells[row])), list(dict.fromkeys(cells[col]))]
    return tx.markdown_table(wide.reset_index(), align=["l"] + ["r"] * len(wide.columns))


# --- Notes under every study table ---------------------------------------------------------

def fit_reason(text: Any) -> str:
    """A failure reason without its numbers, so equal causes count together."""
    if not isinstance(text, str) or not text.strip():
        return "unknown"
    head = re.sub(r"\[[^\]]*\]", "", re.sub(r"=\S+", "", text.split(":")[0]))
    return re.sub(r"\s+", " ", head).strip()


FIT_CURVES = (("train_fit", "training"), ("val_fit", "validation"))  # (column prefix, curve)


def failed_fits(runs: pd.DataFrame, prefix: str) -> pd.Series:
    """Counts of failed ``prefix`` fits (``train_fit``, ``val_fit``, ``clean_fit``) by reason."""
    failed = runs.loc[~tx.as_bool(runs[f"{prefix}_ok"]), f"{prefix}_reason"]
    return failed.map(fit_reason).value_counts()


def fit_note(runs: pd.DataFrame, min_r2: float) -> str:
    parts = []
    for prefix, name in FIT_CURVES:
        counts = failed_fits(runs, prefix)
        detail = ", ".join(f"{reason}: {n}" for reason, n in counts.items())
        parts.append(f"{int(counts.sum())} of {len(runs)} {name} fits failed"
                     + (f" ({detail})" if detail else ""))
    return (f"An erf fit counts only with R² ≥ {min_r2:g} (`analysis.min_fit_r2`): "
            + "; ".join(parts) + ".")


def grok_note(runs: pd.DataFrame, delay: int) -> str:
    groks, reached = tx.as_bool(runs["groks"]), tx.as_bool(runs["grokked"])
    prompt = reached & ~groks & tx.as_bool(runs["train_reached"])
    return (f"A seed *groks* when its validation accuracy reaches 99% at least {delay} updates "
            f"(`analysis.grok_delay`) after its training curve did: {tx.frac(groks)} seeds "
            f"grok here; {int(prompt.sum())} more reached 99% less than {delay} updates after "
            "training (prompt generalisation, not grokking).")


def _fell_items(fell: pd.DataFrame) -> str:
    return "; ".join(
        f"`{cell}` seed{'s' if len(g) > 1 else ''} "
        + ", ".join(f"{int(r.seed)} (99% at {int(r.steps_to_99)}, below at "
                    f"{int(r.collapse_step)}, final {r.final_val_acc:.2f})"
                    for r in g.itertuples())
        for cell, g in fell.groupby("cell", sort=False))


def collapse_note(runs: pd.DataFrame, below: float) -> str:
    """Runs that collapsed (ended below the floor at their budget after reaching 99%) apart
    from runs that dipped below it and recovered, and from runs a stop rule ended while below
    it (a collapse or a dip: the run cannot tell): different findings."""
    def flagged(name: str) -> pd.DataFrame:
        return runs[tx.as_bool(runs[name])] if name in runs else runs.iloc[:0]

    fell, dipped, stopped = flagged("collapsed"), flagged("dipped"), flagged("stopped_below")
    rule = f"reached 99%, then fell below {below:g} (`analysis.collapse_below`)"
    out = [f"**Collapsed** ({rule} and ended below it at the budget): {_fell_items(fell)}."
           if len(fell) else f"No run collapsed ({rule} and ended below it at the budget)."]
    if len(stopped):
        out.append(f"Stopped below {below:g} (the stop rule, `train.stop_after_grok`, ended the "
                   "run while it was below: a collapse and a dip cannot be told apart): "
                   f"{_fell_items(stopped)}.")
    if len(dipped):
        out.append(f"Transient dips (fell below {below:g}, then recovered by the last "
                   f"evaluation): {_fell_items(dipped)}.")
    if len(fell) or len(dipped) or len(stopped):
        out.append("Each counts as reaching 99% in the steps column; the final accuracy says "
                   "where it ended.")
    return " ".join(out)


def leak_note(runs: pd.DataFrame) -> str:
    if "val_in_train" not in runs:
        return "Validation inputs in training (`val_in_train`): not recorded for these runs."
    v = runs["val_in_train"].astype(float)
    if (v == 0).all():
        return ("No validation input occurs in any run's training split (`val_in_train` = 0 "
                f"in all {len(runs)} runs).")
    worst = runs.loc[v.idxmax()]
    return (f"Validation inputs that also occur in the training split (`val_in_train`): up "
            f"to {v.max():.3f} (`{worst['cell']}`), in {int((v > 0).sum())} of {len(runs)} "
            "runs: those validation accuracies partly measure memorisation.")


def notes(ctx: Context, tables: StudyTables, budget: int) -> list[str]:
    """Paragraphs under a study table: censoring, grokking, collapse, fits, leakage, gaps."""
    cells, runs, a = tables.cells, tables.runs, ctx.analysis
    n_cens, n_all = int(cells["n_censored"].sum()), int(cells["n_seeds"].sum())
    out = ["", f"{n_cens} of {n_all} seeds (in {int((cells['n_censored'] > 0).sum())} of "
           f"{len(cells)} cells) never reached 99% validation accuracy within the budget of "
           f"{budget} updates. They are counted at the budget, not dropped, so a cell marked "
           "`≥` shows a lower bound on its mean (and no interval)."]
    if runs is not None:
        out += ["", grok_note(runs, a.grok_delay), "", collapse_note(runs, a.collapse_below),
                "", fit_note(runs, a.min_fit_r2), "", leak_note(runs)]
    return out + [f"\n_{note}_" for note in tables.notes]


# --- Each cell against the study's default -------------------------------------------------

def _diff(r: pd.Series) -> str:
    if r["median_diff_bound"] == "undefined" or tx.missing(r["median_diff"]):
        return "undefined (both censored)"
    sign = {">=": "≥ ", "<=": "≤ "}.get(str(r["median_diff_bound"]), "")
    return f"{sign}{r['median_diff']:+.0f}"


def fmt_ratio(r: pd.Series) -> str:
    """The time ratio with its 95% interval and p, or why it is undefined."""
    if tx.missing(r.get("time_ratio")):
        reason = r.get("time_ratio_reason")
        return f"undefined ({reason})" if isinstance(reason, str) and reason else tx.DASH
    return (f"{r['time_ratio']:.2f} [{r['time_ratio_ci_low']:.2f}, "
            f"{r['time_ratio_ci_high']:.2f}], p {tx.p_eq(r['time_ratio_p'])}")


METHOD_SHORT = {"exact permutation": "exact", "asymptotic": "asymptotic"}


def fmt_logrank(r: pd.Series) -> str:
    """Log-rank p with how it was computed and the smallest p it could give."""
    method = str(r["logrank_method"])
    short = METHOD_SHORT.get(method, "Monte-Carlo" if method.startswith("Monte") else method)
    return f"{tx.fmt_p(r['logrank_p'])} ({short}; floor {tx.fmt_p(r['logrank_floor'])})"


def fmt_verdict(r: pd.Series) -> str:
    """The verdict and the test that decided it."""
    by = "time ratio" if str(r["decided_by"]).startswith("log-normal") else "log-rank"
    return f"{r['verdict']} ({by})"


def comparison_table(comparisons: pd.DataFrame) -> str:
    rows = [{"task": r["task"], "value": f"`{r['value']}`", "vs": f"`{r['reference']}`",
             "seeds reached 99%": f"{int(r['n_reached'])}/{int(r['n'])} vs "
                                  f"{int(r['n_reached_reference'])}/{int(r['n_reference'])}",
             "median updates": f"{r['median']:.0f} vs {r['median_reference']:.0f}",
             "median difference": _diff(r), "time ratio [95% CI]": fmt_ratio(r),
             "log-rank p (method; floor)": fmt_logrank(r),
             "verdict (decided by)": fmt_verdict(r)} for _, r in comparisons.iterrows()]
    return tx.markdown_table(pd.DataFrame(rows),
                             align=["l", "l", "l", "r", "r", "r", "r", "r", "l"])


def across_tasks_table(across: pd.DataFrame) -> str:
    rows = [{"value": f"`{r['value']}`", "vs": f"`{r['reference']}`", "tasks": int(r["tasks"]),
             "seeds reached 99%": f"{int(r['n_reached'])}/{int(r['n'])} vs "
                                  f"{int(r['n_reached_reference'])}/{int(r['n_reference'])}",
             "time ratio [95% CI]": fmt_ratio(r),
             "stratified log-rank p (method; floor)": fmt_logrank(r),
             "verdict (decided by)": fmt_verdict(r)} for _, r in across.iterrows()]
    return tx.markdown_table(pd.DataFrame(rows), align=["l", "l", "r", "r", "r", "r", "l"])


def _floors(rows: pd.DataFrame) -> str:
    """The smallest p each design could give, grouped by seeds and method."""
    groups: dict[tuple[int, int, str], list[float]] = {}
    for _, r in rows.iterrows():
        key = (int(r["n"]), int(r["n_reference"]), str(r["decided_by"]))
        groups.setdefault(key, []).append(float(r["p_floor"]))
    parts = []
    for (a, b, by), floors in sorted(groups.items()):
        floor = ("none (parametric)" if by.startswith("log-normal")
                 else tx.fmt_p(min(floors)) if min(floors) == max(floors)
                 else f"{tx.fmt_p(min(floors))} to {tx.fmt_p(max(floors))}")
        parts.append(f"{a} against {b} seeds, {by}: {floor}")
    return "; ".join(parts)


def comparison_summary(comparisons: pd.DataFrame, what: str = "on") -> str:
    """Which cells reach 99% faster or slower than the default, by which test, and how small
    a p-value each design allows at all."""
    parts = []
    for word in ("faster", "slower"):
        rows = comparisons[comparisons["verdict"] == word]
        if len(rows):
            parts.append(f"**{word}** than the default: " + ", ".join(
                f"`{r['value']}`" + (f" {what} {r['task']}" if "task" in r else "")
                + f" ({r['decided_by']}; p {tx.p_eq(r['p_value'])})"
                for _, r in rows.iterrows()))
    rest = comparisons[comparisons["verdict"] == "not distinguishable"]
    if len(rest):
        parts.append(f"{'the other' if parts else 'All'} {len(rest)} not distinguishable from "
                     f"the default — no difference shown, which is not evidence of none (the "
                     f"smallest p each deciding test could give: {_floors(rest)})")
    return "; ".join(parts) + "."


METHOD_MEANING = {"exact permutation": "over every relabelling of the seeds",
                  "asymptotic": "the normal approximation"}


def _methods(comparisons: pd.DataFrame) -> str:
    """How the log-rank p-values were computed, e.g. "asymptotic (the normal approximation)
    in 4 of 4 rows": only the methods actually used are named."""
    counts = comparisons["logrank_method"].value_counts()
    return ", ".join(f"{method} ({METHOD_MEANING.get(method, 'random relabellings')}) in {n} "
                     f"of {len(comparisons)} rows" for method, n in counts.items())


def comparison_reading(comparisons: pd.DataFrame | None,
                       across: pd.DataFrame | None = None) -> list[str]:
    """Every cell against the study's default-value cell, per task and across the tasks:
    tables and their summaries, saying which test decided each verdict."""
    if comparisons is None:
        return []
    if comparisons.empty:
        return ["No cell of this study is at the default value, so nothing is compared with "
                "it."]
    out = ["Each cell against the study's default value on updates to 99% validation "
           "accuracy, censored seeds kept at the budget. Two tests, one deciding each row: "
           f"the log-rank test (p by {_methods(comparisons)}) decides when its floor — the "
           "smallest p it could give with these seeds — is below 0.05; "
           "otherwise (e.g. 3 vs 3 seeds: floor 0.1) the time ratio of a log-normal "
           "accelerated-failure-time fit decides: the cell's updates over the default's, with "
           "a Student t 95% interval, faster or slower only when the interval excludes 1; "
           "where the ratio is undefined (too few seeds reached 99%), the log-rank's verdict "
           "stands. "
           "The median difference is a description (≥/≤: a censored median, so a bound); it "
           "has no interval, because none holds its 95% at 3 seeds.", "",
           comparison_table(comparisons), "", comparison_summary(comparisons)]
    if across is not None and not across.empty:
        out += ["", "Across the study's tasks (the question the papers ask: does this value "
                "change grokking?): a log-rank test stratified by task, relabelling seeds only "
                f"within a task (p by {_methods(across)}), and a time ratio with one "
                "intercept per task; decided as above.", "", across_tasks_table(across), "",
                comparison_summary(across)]
    return out


def verdict_of(comparisons: pd.DataFrame | None, task: str, value: Any) -> str | None:
    """The comparison verdict of one cell, if it was compared."""
    if comparisons is None or comparisons.empty:
        return None
    rows = comparisons[(comparisons["task"] == task)
                       & (comparisons["value"].astype(str) == str(value))]
    return None if rows.empty else str(rows.iloc[0]["verdict"])


# --- A reading of the numbers ----------------------------------------------------------------

SHAPE_METRICS = (("relative_gap", "relative gap"), ("relative_sharpness", "relative sharpness"),
                 ("absolute_sharpness", "absolute sharpness"))


def _extremes(group: pd.DataFrame, factor: str, name: str, label: str) -> str | None:
    ok = group[np.isfinite(group[f"{name}_mean"].astype(float))]
    if ok.empty:
        return None
    if len(ok) == 1:
        r = ok.iloc[0]
        return f"{label}: mean {r[f'{name}_mean']:.3g} (only `{r[factor]}` has fits)"
    hi, lo = ok.loc[ok[f"{name}_mean"].idxmax()], ok.loc[ok[f"{name}_mean"].idxmin()]
    return (f"{label}: highest mean for `{hi[factor]}` ({hi[f'{name}_mean']:.3g}), lowest "
            f"for `{lo[factor]}` ({lo[f'{name}_mean']:.3g}) {tx.NOT_TESTED}")


def _trend(group: pd.DataFrame, factor: str, name: str, label: str) -> str | None:
    values = group[f"{name}_mean"].astype(float)
    if np.isfinite(values).sum() < 2:
        return None
    return (f"{label}: the mean " + tx.describe_trend(trend(group[factor].astype(float), values))
            + f" {tx.NOT_TESTED}")


def factor_reading(cells: pd.DataFrame, factor: str, *, budget: int,
                   numeric: bool = False) -> str:
    """Bullets per task, described from means over seeds and marked "(not tested)" (the
    comparisons test each value against the default): the lowest and highest mean updates to
    99%, which grok, which never reached it, and how the mean relative gap and both sharpness
    measures move with the factor."""
    lines = []
    for task, group in cells.groupby("task", sort=False):
        never = group[group["n_censored"] >= group["n_seeds"]]
        some = group[(group["n_censored"] > 0) & (group["n_censored"] < group["n_seeds"])]
        full = group[group["n_censored"] == 0].sort_values("steps_to_99_mean", kind="stable")
        parts = []
        if len(full):
            best, worst = full.iloc[0], full.iloc[-1]
            if len(full) > 1:
                parts.append(f"among values where every seed reached 99%, lowest mean updates "
                             f"`{best[factor]}` ({tx.cell_steps(best)}), highest "
                             f"`{worst[factor]}` ({tx.cell_steps(worst)}) {tx.NOT_TESTED}")
            else:
                parts.append(f"every seed reached 99% only with `{best[factor]}` "
                             f"({tx.cell_steps(best)} updates)")
        elif not len(some):
            parts.append(f"no setting reached 99% within {budget} updates in any seed")
        if len(some):
            parts.append("some seeds but not all reached 99% with " + ", ".join(
                f"`{r[factor]}` ({tx.reached(r)})" for _, r in some.iterrows()))
        if len(never) and len(never) < len(group):
            parts.append(f"never reached 99% within {budget} updates: {tx.names(never[factor])}")
        if "n_groks" in group:
            groks = group[group["n_groks"] > 0]
            parts.append(("grokking (in some seed): " + ", ".join(
                f"`{r[factor]}` ({tx.count(r, 'n_groks')})" for _, r in groks.iterrows()))
                if len(groks) else "no setting groks in any seed")
        for name, label in SHAPE_METRICS:
            said = (_trend if numeric else _extremes)(group, factor, name, label)
            parts += [said] if said else []
        if not any(np.isfinite(group[f"{m}_mean"].astype(float)).any() for m, _ in SHAPE_METRICS):
            parts.append("no erf fit succeeded, so gap and sharpness are undefined")
        lines.append(f"- **{task}**: " + "; ".join(parts) + ".")
    return "\n".join(lines)


# --- The usual figures (``<study>_<what>.png``, titled "<Study> study: ...") and body --------

def curves(ctx: Context, tables: StudyTables, study: str, hue: str,
           title: str | None = None) -> list[str]:
    if tables.histories is None:
        return []
    title = title or f"{study.capitalize()} study: accuracy vs updates"
    fig = plots.accuracy_curves(tables.histories, tables.runs, hue=hue, col="task", title=title)
    return ["", ctx.figure(f"{study}_curves", fig, title)]


def steps_bars(ctx: Context, tables: StudyTables, study: str, hue: str) -> list[str]:
    title = f"{study.capitalize()} study: updates to 99% validation accuracy"
    fig = plots.steps_to_99(tables.cells, hue=hue, budget=ctx.budget(study), title=title)
    return ["", ctx.figure(f"{study}_steps_to_99", fig, title)]


def fraction_figure(ctx: Context, tables: StudyTables, study: str, hue: str) -> list[str]:
    if tables.runs is None:
        return []
    title = f"{study.capitalize()} study: fraction of seeds at 99% by update"
    fig = plots.fraction_reached(tables.runs, hue=hue, title=title)
    return ["", ctx.figure(f"{study}_fraction_reached", fig, title)]


def published(items: list[str]) -> list[str]:
    return ["", "### Published", "", *items]


def reading(cells: pd.DataFrame, factor: str, budget: int, tables: StudyTables, *,
            numeric: bool = False) -> list[str]:
    return ["", "### Reading", "", factor_reading(cells, factor, budget=budget, numeric=numeric),
            "", *comparison_reading(tables.comparisons, tables.across_tasks)]


def claims(ctx: Context, file: str, study: str) -> tuple[dict[str, Any], list[str]]:
    """A study's published claims in ``references/<file>.json`` and its quotes as bullets."""
    ref = ctx.reference(file)
    if ref is None:
        return {}, [f"_`references/{file}.json` was not found: no published claims._"]
    spec = ref.get(study, {})
    return spec, tx.quotes(spec.get("quotes", []), ref.get("sources", {}))


def cell_config(params: dict[str, Any], study: str, task: str, value: Any) -> Any | None:
    """The run configuration of one cell of ``study``; None where params cannot give one."""
    try:
        return studies(params)[study].config(params, task, value)
    except (ConfigError, KeyError):
        return None


MIN_SEEDS = 3  # the papers' seeds: a count over fewer decides no published claim


def majority(k: int, n: int) -> bool | None:
    """True when more than half of ``n`` seeds do it, False when none does, else None; None
    too with fewer than :data:`MIN_SEEDS` seeds (one seed cannot agree with a paper)."""
    if n < MIN_SEEDS:
        return None
    return True if k > n / 2 else False if k == 0 else None


def count_basis(n: int) -> str:
    """How a count-based verdict was reached, for :class:`~groklab.report.text.Verdict`."""
    if n < MIN_SEEDS:
        return f"{n} seed{'s' if n != 1 else ''}, fewer than {MIN_SEEDS}: too few to tell"
    return f"a count over {n} seeds, {tx.NOT_TESTED}"


def train_column(runs: pd.DataFrame | None, factor: str) -> dict[str, Column]:
    """Extra table column: seeds whose *training* curve reached 99% (k/n)."""
    if runs is None:
        return {}
    fit = {key: f"{int(tx.as_bool(g['train_reached']).sum())}/{len(g)}"
           for key, g in runs.groupby(["task", factor], sort=False)}
    return {"train reached 99%": lambda c: fit.get((c["task"], c[factor]), tx.DASH)}


def distinct(runs: pd.DataFrame) -> int:
    """Distinct runs (configuration and seed, ``run_key``) among the rows."""
    return int(runs["run_key"].nunique()) if "run_key" in runs else len(runs)

"""The batch-size study (the course project): the same number of updates at different batch
sizes, the cost in updates and in examples, and how much validation accuracy moves after 99%."""

from __future__ import annotations

import pandas as pd

from groklab.metrics import RANK_EXACT_MAX, rank_trend
from groklab.report import plots
from groklab.report import study as st
from groklab.report import text as tx
from groklab.report.context import Context, Section, StudyTables

REF, FACTOR = "grokking_project_claims", "batch_size"
PAPER_BUDGET = 30_000  # the course project's updates (its quote: "3×10^4")
COLUMNS = ("steps to 99%", "reached 99%", "groks", "final val acc", "relative gap",
           "relative sharpness", "fits ok")


def with_examples(cells: pd.DataFrame) -> pd.DataFrame:
    """``cells`` plus ``examples_to_99_*``: updates to 99% times the batch size."""
    b = cells[FACTOR].astype(float)
    return cells.assign(**{f"examples_to_99_{k}": cells[f"steps_to_99_{k}"] * b
                           for k in ("mean", "sd", "ci_low", "ci_high")})


def seen(c: pd.Series, done: dict, budget: int) -> str:
    """Examples a cell's seeds saw: mean updates done (runs stopped by `stop_after_grok` do
    fewer than the budget) times the batch."""
    return f"{done.get((c['task'], c[FACTOR]), budget) * int(c[FACTOR]):.0f}"


def volatility_verdict(runs: pd.DataFrame, spec: dict, budget: int) -> tx.Verdict | None:
    """The claim that larger batches make validation accuracy more volatile, tested per run:
    Spearman's rank correlation of batch size with the sd of validation accuracy after it
    first reached 99% (one point per seed that reached it; exact p for up to 8 points). It
    agrees or disagrees only when the correlation is significant at 0.05."""
    sd = runs["post_grok_val_sd"].astype(float)
    test = rank_trend(runs[FACTOR].astype(float), sd)
    if test.n < 2:
        return None
    task = runs["task"].iloc[0]
    sizes = ", ".join(str(int(b)) for b in sorted(set(runs.loc[sd.notna(), FACTOR])))
    if tx.missing(test.rho):
        said = f"Spearman ρ undefined over {test.n} seeds (batches {sizes})"
    else:
        exact = "exact" if test.n <= RANK_EXACT_MAX else "asymptotic"
        said = (f"Spearman ρ = {test.rho:.2f}, p {tx.p_eq(test.p_value)} ({exact}) over "
                f"{test.n} seeds (batches {sizes})")
    caveat = "; ".join(x for x in ("the paper ran p = 41, ours the base run's p",
                                   tx.budget_caveat(PAPER_BUDGET, budget)) if x)
    return tx.Verdict(
        f"**{task}**: after first reaching 99%, the standard deviation of validation accuracy "
        f"against batch size per seed: {said}",
        f"{spec['source']} reports more volatility with larger batches",
        {"rises": True, "falls": False}.get(test.direction or ""), caveat=caveat,
        basis="Spearman rank test at 0.05")


def body(ctx: Context, tables: StudyTables) -> list[str]:
    cells, budget = with_examples(tables.cells), ctx.budget("batch_size")
    spec, quoted = st.claims(ctx, REF, "batch_size")
    done = ({} if tables.runs is None else tables.runs.groupby(["task", FACTOR])[
        "steps_done"].mean().to_dict() if "steps_done" in tables.runs else {})
    extra = {"examples to 99%": lambda c: tx.cell_steps(c, "examples_to_99"),
             "examples seen (mean)": lambda c: seen(c, done, budget),
             "val acc sd after 99%": lambda c: tx.fmt_sig(c.get("post_grok_val_sd_mean"))}
    sizes = sorted(cells[FACTOR].astype(int).unique())
    fig = plots.metric_vs_factor(
        cells, FACTOR, ["steps_to_99", "examples_to_99"], logx=True,
        limits={"steps_to_99": budget,
                "examples_to_99": pd.Series([budget * b for b in sizes], index=sizes)},
        title="Batch size: cost of grokking in updates and in examples")
    lines = ["Every batch size runs the same number of updates, so larger batches see more "
             "examples; the table gives both costs.", "",
             st.study_table(cells, FACTOR, COLUMNS, extra=extra), *st.notes(ctx, tables, budget),
             "", ctx.figure("batch_size_trends", fig, "Steps and examples to 99% vs batch size"),
             *st.curves(ctx, tables, "batch_size", FACTOR, "Batch size: accuracy vs updates"),
             *st.published(quoted), *st.reading(cells, FACTOR, budget, tables, numeric=True),
             ""]
    for task, group in cells.groupby("task", sort=False):
        full = group[group["n_censored"] == 0]
        if len(full) >= 2:
            u = full.loc[full["steps_to_99_mean"].idxmin()]
            e = full.loc[full["examples_to_99_mean"].idxmin()]
            lines.append(f"- **{task}**: lowest mean updates to 99% at batch {int(u[FACTOR])}, "
                         f"lowest mean examples at batch {int(e[FACTOR])} {tx.NOT_TESTED}.")
        runs = (tables.runs[tables.runs["task"] == task] if tables.runs is not None
                else None)
        volatility = (volatility_verdict(runs, spec, budget)
                      if spec and runs is not None and len(runs) else None)
        if volatility:
            lines.append(f"- {volatility}")
    return lines


SECTIONS = (Section("batch_size", "Batch-size study", body),)

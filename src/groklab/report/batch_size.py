"""The batch-size study (the course project): the same number of updates at different batch
sizes, the cost in updates and in examples, and how much validation accuracy moves after 99%."""

from __future__ import annotations

import numpy as np
import pandas as pd

from groklab.metrics import trend
from groklab.report import plots
from groklab.report import study as st
from groklab.report import text as tx
from groklab.report.context import Context, Section, StudyTables

REF, FACTOR = "grokking_project_claims", "batch_size"
COLUMNS = ("steps to 99%", "reached 99%", "groks", "final val acc", "relative gap",
           "relative sharpness", "fits ok")


def with_examples(cells: pd.DataFrame) -> pd.DataFrame:
    """``cells`` plus ``examples_to_99_*``: updates to 99% times the batch size."""
    b = cells[FACTOR].astype(float)
    return cells.assign(**{f"examples_to_99_{k}": cells[f"steps_to_99_{k}"] * b
                           for k in ("mean", "sd", "ci_low", "ci_high")})


def volatility_verdict(group: pd.DataFrame, spec: dict) -> tx.Verdict | None:
    """The claim that larger batches make validation accuracy more volatile, against the sd
    of validation accuracy after it first reached 99% (mean over seeds that reached it)."""
    sd = group["post_grok_val_sd_mean"].astype(float)
    if np.isfinite(sd).sum() < 2:
        return None
    t = trend(group[FACTOR].astype(float), sd)
    return tx.Verdict(
        f"**{group['task'].iloc[0]}**: after first reaching 99%, the standard deviation of "
        f"validation accuracy {tx.describe_trend(t, '.4f')} as the batch grows",
        f"{spec['source']} reports more volatility with larger batches",
        {"rises": True, "falls": False}.get(t.direction),
        "the paper ran p = 41 and 3×10^4 updates, ours the base run's p and budget")


def body(ctx: Context, tables: StudyTables) -> list[str]:
    cells, budget = with_examples(tables.cells), ctx.budget("batch_size")
    spec, quoted = st.claims(ctx, REF, "batch_size")
    extra = {"examples to 99%": lambda c: tx.cell_steps(c, "examples_to_99"),
             "examples in budget": lambda c: f"{budget * int(c[FACTOR])}",
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
            lines.append(f"- **{task}**: fewest updates to 99% at batch {int(u[FACTOR])}, "
                         f"fewest examples at batch {int(e[FACTOR])}.")
        volatility = volatility_verdict(group, spec) if spec else None
        if volatility:
            lines.append(f"- {volatility}")
    return lines


SECTIONS = (Section("batch_size", "Batch-size study", body),)

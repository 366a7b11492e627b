"""The optimizer study (the course project, Exploring Grokking): named variants of
`optimizers` on x_div_y, and the claim that AdamW with weight decay generalises better than
Adam."""

from __future__ import annotations

from typing import Any

import pandas as pd

from groklab.metrics import trend
from groklab.report import study as st
from groklab.report import text as tx
from groklab.report.context import Context, Section, StudyTables

REF = "grokking_project_claims"


def variant_table(params: dict[str, Any], variants: list[str]) -> str:
    opts, batch = params["optimizers"], params["train"]["batch_size"]
    rows = []
    for v in variants:
        o = opts.get(v, {})
        rows.append({
            "variant": f"`{v}`", "kind": o.get("kind", "?"), "lr": o.get("lr", tx.DASH),
            "weight decay": o.get("weight_decay", tx.DASH),
            "momentum": (f"{o.get('momentum', 0)}" + (" Nesterov" if o.get("nesterov") else "")
                         if o.get("kind") == "sgd" else tx.DASH),
            "batch": "full" if "batch_size" in o and o["batch_size"] is None
            else o.get("batch_size", batch),
            "dropout": o.get("dropout", params["model"]["dropout"]),
        })
    return tx.markdown_table(pd.DataFrame(rows), align=["l", "l"] + ["r"] * 5)


def weight_decay_trend(cells: pd.DataFrame, params: dict[str, Any]) -> str | None:
    """Steps to 99% against weight decay over the variants that differ from adamw only there."""
    opts = params["optimizers"]
    base = {k: v for k, v in opts.get("adamw", {}).items() if k != "weight_decay"}
    same = [v for v in cells["optimizer"]
            if {k: x for k, x in opts.get(v, {}).items() if k != "weight_decay"} == base]
    rows = cells[cells["optimizer"].isin(same)]
    if len(rows) < 2:
        return None
    wd = rows["optimizer"].map(lambda v: float(opts[v]["weight_decay"]))
    censored = int(rows["n_censored"].sum())
    return (f"Over AdamW with weight decay {', '.join(f'{w:g}' for w in sorted(wd))} (all else "
            "equal), mean updates to 99% "
            + tx.describe_trend(trend(wd, rows["steps_to_99_mean"].astype(float)))
            + (f" ({censored} censored seeds counted at the budget)" if censored else "")
            + f" {tx.NOT_TESTED}.")


def better_verdicts(cells: pd.DataFrame, comparisons: pd.DataFrame | None,
                    claim: dict[str, str]) -> list[tx.Verdict]:
    """The claim "``better`` generalises better than ``worse``" per task, on the comparison
    of ``worse`` with the default ``better`` (steps to 99%, log-rank)."""
    out = []
    good, bad = claim["better"], claim["worse"]
    for task, group in cells.groupby("task", sort=False):
        by = group.set_index("optimizer")
        if not {good, bad} <= set(by.index):
            continue
        g, b = by.loc[good], by.loc[bad]
        word = st.verdict_of(comparisons, task, bad)
        if st.verdict_of(comparisons, task, good) is not None:  # `good` is not the default
            word = None
        rows = (comparisons[(comparisons["task"] == task)
                            & (comparisons["value"].astype(str) == str(bad))]
                if word is not None and comparisons is not None else None)
        basis = ("" if rows is None or rows.empty else
                 f"{rows.iloc[0]['decided_by']}, p {tx.p_eq(rows.iloc[0]['p_value'])}")
        out.append(tx.Verdict(
            f"**{task}**, `{good}` vs `{bad}`: {tx.cell_steps(g)} vs {tx.cell_steps(b)} updates "
            f"to 99% (`{bad}` {word or 'not compared'}), final validation accuracy "
            f"{g['final_val_acc_mean']:.3f} vs {b['final_val_acc_mean']:.3f}",
            f"{claim['source']} says `{good}` generalises better",
            {"slower": True, "faster": False}.get(word or ""),
            "the paper shows generalisation in a figure, without its task, budget or numbers",
            basis=basis))
    return out


def body(ctx: Context, tables: StudyTables) -> list[str]:
    cells, budget = tables.cells, ctx.budget("optimizer")
    spec, quoted = st.claims(ctx, REF, "optimizer")
    lines = ["The variants (`optimizers` in params):", "",
             variant_table(ctx.params, list(dict.fromkeys(cells["optimizer"]))), "",
             st.study_table(cells, "optimizer", extra=st.train_column(tables.runs, "optimizer")),
             *st.notes(ctx, tables, budget),
             *st.steps_bars(ctx, tables, "optimizer", "optimizer"),
             *st.curves(ctx, tables, "optimizer", "optimizer",
                        "Optimizer study: accuracy vs updates, one colour per variant"),
             *st.published(quoted), *st.reading(cells, "optimizer", budget, tables)]
    if "better" in spec:
        lines += ["", *tx.bullets(better_verdicts(cells, tables.comparisons, spec["better"]))]
    wd = weight_decay_trend(cells, ctx.params)
    return lines + ([f"- {wd}"] if wd else [])


SECTIONS = (Section("optimizer", "Optimizer study", body),)

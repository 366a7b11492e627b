"""The data-fraction study (the course project and the Exploring Grokking paper): how the
training fraction moves grokking, and the course project's no-grokking case at fraction 0.05,
p = 113."""

from __future__ import annotations

from typing import Any

import pandas as pd

from groklab.report import plots
from groklab.report import study as st
from groklab.report import text as tx
from groklab.report.context import Context, Section, StudyTables

REF, FACTOR = "grokking_project_claims", "train_fraction"


def claim_verdicts(cells: pd.DataFrame, spec: dict[str, Any], p: dict) -> list[tx.Verdict]:
    """Each published "groks / does not grok" at a fraction (a count over at least three
    seeds), and where grokking is most prominent: described from mean grok delays, not
    tested, so it states no agreement."""
    out = []
    for task, group in cells.groupby("task", sort=False):
        for claim in spec.get("groks", []):
            row = group[group[FACTOR].astype(float) == claim["train_fraction"]]
            if row.empty:
                continue
            r = row.iloc[0]
            ours = st.majority(int(r["n_groks"]), int(r["n_seeds"]))
            modulus_ = p[(task, r[FACTOR])]
            out.append(tx.Verdict(
                f"**{task}**, fraction {r[FACTOR]:g} (p = {modulus_}): "
                f"{tx.count(r, 'n_groks')} seeds grok, {tx.reached(r)} reach 99%",
                f"{claim['text']} ({claim['source']})",
                None if ours is None else ours == claim["groks"],
                caveat="" if modulus_ == claim["p"] else f"the paper ran p = {claim['p']}",
                basis=st.count_basis(int(r["n_seeds"]))))
        top = spec.get("most_prominent")
        full = group[group["n_groks"] == group["n_seeds"]]
        if top and len(full) > 1:
            best = full.loc[full["grok_delay_steps_mean"].astype(float).idxmax()]
            out.append(tx.Verdict(
                f"**{task}**: among fractions where every seed groks "
                f"({', '.join(f'{f:g}' for f in full[FACTOR])}), the longest mean grok delay "
                f"is at {best[FACTOR]:g} ({best['grok_delay_steps_mean']:.0f} updates) "
                f"{tx.NOT_TESTED}", f"{top['source']}: {top['text']}", None,
                caveat="our grid and budget differ from the paper's",
                basis="mean delays, not tested"))
        elif top and len(full) == 1:
            out.append(tx.Verdict(
                f"**{task}**: every seed groks only at fraction {full[FACTOR].iloc[0]:g}, so "
                "there is no delay to compare it with", f"{top['source']}: {top['text']}",
                None, caveat="our grid and budget differ from the paper's"))
    return out


def body(ctx: Context, tables: StudyTables) -> list[str]:
    cells, budget = tables.cells, ctx.budget("data_fraction")
    spec, quoted = st.claims(ctx, REF, "data_fraction")
    configs = {(c["task"], c[FACTOR]): st.cell_config(ctx.params, "data_fraction", c["task"],
                                                      c[FACTOR]) for _, c in cells.iterrows()}
    p = {key: tx.DASH if cfg is None else cfg.data.p for key, cfg in configs.items()}
    odd = {f: v for (_, f), v in p.items() if v != ctx.params["data"]["p"]}
    fig = plots.metric_vs_factor(cells, FACTOR, ["steps_to_99", "relative_gap"],
                                 limits={"steps_to_99": budget},
                                 notes={f: f"p = {v}" for f, v in odd.items()},
                                 title="Training fraction: updates to 99% and relative gap")
    lines = [st.study_table(cells, FACTOR, extra={"p": lambda c: p[(c["task"], c[FACTOR])]}),
             *st.notes(ctx, tables, budget), "",
             ctx.figure("data_fraction_trends", fig, "Steps to 99% and relative gap vs fraction"),
             *st.curves(ctx, tables, "data_fraction", FACTOR,
                        "Training fraction: accuracy vs updates")]
    if odd:
        lines += ["", "Cells at another modulus (`studies.data_fraction.value_settings`): "
                  + ", ".join(f"fraction {f:g} runs at p = {v}" for f, v in odd.items()) + "."]
    sources = (ctx.reference(REF) or {}).get("sources", {})
    claimed = tx.quotes([{**c, "text": f"fraction {c['train_fraction']:g}: {c['text']}"}
                         for c in [*spec.get("groks", []), spec.get("most_prominent")] if c],
                        sources)
    lines += [*st.published(claimed + quoted), *st.reading(cells, FACTOR, budget, tables,
                                                          numeric=True), ""]
    for task, group in cells.groupby("task", sort=False):
        full = group[group["n_censored"] == 0][FACTOR]
        none = group[group["n_censored"] >= group["n_seeds"]][FACTOR]
        text = (f"smallest fraction at which every seed reached 99%: {full.min():g} "
                f"{tx.NOT_TESTED}" if len(full)
                else "no fraction reached 99% in every seed")
        if len(none):
            text += f"; no seed reached it at {', '.join(f'{f:g}' for f in none)}"
        lines.append(f"- **{task}**: {text}.")
    return lines + tx.bullets(claim_verdicts(cells, spec, p))


SECTIONS = (Section("data_fraction", "Data-fraction study", body),)

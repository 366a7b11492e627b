"""The multivariate study (the course project): x1 + ... + xK mod p for K operands."""

from __future__ import annotations

from typing import Any

import pandas as pd

from groklab.report import study as st
from groklab.report import text as tx
from groklab.report.context import Context, Section, StudyTables, describe_config

REF, FACTOR = "grokking_project_claims", "operands"


def performance_verdict(runs: pd.DataFrame, task: str, claim: dict[str, Any]
                        ) -> tx.Verdict | None:
    """The claim that K operands do not "perform well": ours at >= 99% final validation
    accuracy in more than half the seeds performs well."""
    seeds = runs[(runs["task"] == task) & (runs[FACTOR].astype(int) == claim["operands"])]
    if seeds.empty:
        return None
    well = seeds["final_val_acc"].astype(float) >= 0.99
    ours = st.majority(int(well.sum()), len(seeds))
    return tx.Verdict(
        f"K = {claim['operands']} ends at ≥ 99% validation accuracy in {tx.frac(well)} seeds",
        f"{claim['source']} ({claim['settings']}): the model \"did not perform well on both "
        "the training and test sets\"", None if ours is None else ours == claim["value"],
        caveat=f"the paper's settings differ ({claim['settings']})",
        basis=st.count_basis(len(seeds)))


def body(ctx: Context, tables: StudyTables) -> list[str]:
    cells, runs, budget = tables.cells, tables.runs, ctx.budget("multivariate")
    spec, quoted = st.claims(ctx, REF, "multivariate")
    configs = {(c["task"], int(c[FACTOR])): st.cell_config(ctx.params, "multivariate",
                                                          c["task"], int(c[FACTOR]))
               for _, c in cells.iterrows()}
    configs = {key: cfg for key, cfg in configs.items() if cfg is not None}
    n_train = {} if runs is None else {
        (t, int(k)): int(g["n_train"].iloc[0]) for (t, k), g in runs.groupby(["task", FACTOR])}
    p = {key: cfg.data.p for key, cfg in configs.items()}
    extra = {"p": lambda c: p.get((c["task"], int(c[FACTOR])), tx.DASH),
             "training equations": lambda c: n_train.get((c["task"], int(c[FACTOR])), tx.DASH)}
    lines = [st.study_table(cells, FACTOR, extra=extra), *st.notes(ctx, tables, budget),
             *st.curves(ctx, tables, "multivariate", FACTOR,
                        "Multivariate addition: accuracy vs updates per K"),
             *st.published(quoted), *st.reading(cells, FACTOR, budget, tables), ""]
    claim = spec.get("performs_well")
    for _, c in cells.iterrows():
        cfg = configs.get((c["task"], int(c[FACTOR])))
        if cfg is None:
            continue
        d, k = cfg.data, int(c[FACTOR])
        line = (f"- K = {k} (`{c['cell']}`): p = {d.p} ({d.p ** k} equations), training "
                f"fraction {d.train_fraction:g}, {cfg.model.arch} with {cfg.model.layers} layers, "
                f"batch {cfg.train.batch_size}, "
                f"{cfg.train.steps} updates: validation reached 99% in {tx.reached(c)} seeds "
                f"({tx.cell_steps(c)} updates), {tx.count(c, 'n_collapsed')} collapsed after "
                f"(ended below the floor), {tx.count(c, 'n_dipped')} dipped and recovered"
                + (f", {tx.count(c, 'n_stopped_below')} stopped below the floor by the stop "
                   "rule (collapse or dip: cannot tell)" if _positive(c.get("n_stopped_below"))
                   else "")
                + "; "
                f"final validation accuracy {c['final_val_acc_mean']:.3f}, training "
                f"{c['final_train_acc_mean']:.3f}")
        lines.append(line + ".")
        if claim and claim["operands"] == k and runs is not None:
            verdict = performance_verdict(runs, c["task"], claim)
            lines += [f"- {verdict}"] if verdict else []
    if configs:
        first = describe_config(next(iter(configs.values())), ctx.params["seeds"])
        lines += ["", f"All settings of the first cell: {first}"]
    return lines


def _positive(x: Any) -> bool:
    return x is not None and not tx.missing(x) and int(x) > 0


SECTIONS = (Section("multivariate", "Multivariate study", body),)

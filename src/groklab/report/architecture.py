"""The architecture study (the course project, Exploring Grokking): does each architecture
grok, and does it fit its training split? Claims from
``references/grokking_project_claims.json``."""

from __future__ import annotations

import pandas as pd

from groklab.report import study as st
from groklab.report import text as tx
from groklab.report.context import Context, Section, StudyTables

REF = "grokking_project_claims"


def grok_verdicts(runs: pd.DataFrame, spec: dict, delay: int) -> list[tx.Verdict]:
    """Per architecture: seeds that grok against the published claim (a count over at least
    three seeds); and the claim that the MLP does not fit its training split within the
    paper's budget against our final training accuracies: reaching 100% within a budget no
    longer than the paper's contradicts it, not reaching it within a shorter one cannot
    support it."""
    out = []
    source = spec.get("groks_source", "the paper")
    for arch, claim in spec.get("groks", {}).items():
        rows = runs[runs["arch"] == arch]
        if rows.empty:
            continue
        groks, hit = tx.as_bool(rows["groks"]), tx.as_bool(rows["grokked"])
        train = tx.as_bool(rows["train_reached"])
        ours = st.majority(int(groks.sum()), len(rows))
        never, prompt = int((~hit).sum()), int((hit & ~groks & train).sum())
        why = [f"validation never reached 99% within the budget in {never} seeds"] * bool(never)
        why += [f"it followed training within {delay} updates in {prompt}"] * bool(prompt)
        cause = (" and ".join(why) if claim else f"{int(groks.sum())} seeds' validation "
                 f"reached 99% at least {delay} updates after training")
        out.append(tx.Verdict(
            f"`{arch}` groks in {tx.frac(groks)} seeds over "
            f"{', '.join(dict.fromkeys(rows['task']))} (validation reached 99% in "
            f"{int(hit.sum())}, training in {int(train.sum())})",
            f"{source} says it {'groks' if claim else 'does not grok'}",
            None if ours is None else ours == claim, cause,
            caveat=f"{source} gives no optimiser or budget for this architecture; ours are "
                   f"the base run's ({int(rows['budget'].max())} updates)",
            basis=st.count_basis(len(rows))))
    fits = spec.get("never_fits_training")
    rows = runs[runs["arch"] == fits["arch"]] if fits else pd.DataFrame()
    if len(rows):
        full = rows["final_train_acc"].astype(float) >= 1.0
        ours_budget = int(rows["budget"].max())
        most = st.majority(int(full.sum()), len(rows))  # None: mixed, or too few seeds
        if most is True and ours_budget <= int(fits["steps"]):
            agrees: bool | None = False  # 100% within no more updates than the paper's
        elif most is False and ours_budget >= int(fits["steps"]):
            agrees = True  # none within at least the paper's budget
        else:
            agrees = None  # e.g. none within a shorter budget: says nothing of the paper's
        out.append(tx.Verdict(
            f"`{fits['arch']}` ends at 100% training accuracy in {tx.frac(full)} seeds (mean "
            f"{rows['final_train_acc'].astype(float).mean():.3f}) after {ours_budget} updates",
            f"{fits['source']} says it does not reach 100% within {fits['steps']} updates",
            agrees, "the paper states only the MLP's size; its optimiser, learning rate and "
            "input encoding are not given (ours: the base run's, token embeddings)",
            caveat=tx.budget_caveat(int(fits["steps"]), ours_budget),
            basis=st.count_basis(len(rows))))
    return out


def body(ctx: Context, tables: StudyTables) -> list[str]:
    cells, runs, budget = tables.cells, tables.runs, ctx.budget("architecture")
    spec, quoted = st.claims(ctx, REF, "architecture")
    lines = [st.study_table(cells, "arch", extra=st.train_column(runs, "arch")),
             *st.notes(ctx, tables, budget),
             *st.steps_bars(ctx, tables, "architecture", "arch"),
             *st.curves(ctx, tables, "architecture", "arch"),
             *st.published(quoted), *st.reading(cells, "arch", budget, tables)]
    if runs is not None:
        lines += ["", *tx.bullets(grok_verdicts(runs, spec, ctx.analysis.grok_delay))]
    return lines


SECTIONS = (Section("architecture", "Architecture study", body),)

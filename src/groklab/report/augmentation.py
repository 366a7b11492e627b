"""The augmentation study beside the augmentation paper: its published runs
(``references/augmentation_paper_runs.json``) and its Table 1
(``references/augmentation_paper_table1.json``), leakage and the clean validation pairs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from groklab.metrics import comparison_verdict, logrank
from groklab.report import plots
from groklab.report import study as st
from groklab.report import text as tx
from groklab.report.context import Context, Section, StudyTables

RUNS, TABLE1 = "augmentation_paper_runs", "augmentation_paper_table1"


def published_steps(reference: dict[str, Any], table1: dict[str, Any] | None) -> pd.DataFrame:
    """Steps to 99% of the published runs, one row per (task, aug).

    ``step_val_acc_99`` lists only seeds that reached 99% (and the budget where none did), so
    ``mean`` is over ``n_reached`` seeds; ``n_seeds`` is how many seeds were run; ``table1`` is
    the paper's printed number (NaN for its "N/A"; ``in_table1``: whether it has the cell).
    """
    budget = table1["budget"] if table1 else 7500
    rows = []
    for aug, tasks in reference["runs"].items():
        for task, run in tasks.items():
            listed = [float(v) for v in run.get("step_val_acc_99", [])]
            hit = [v for v in listed if v < budget]
            printed = (table1 or {}).get("rows", {}).get(task, {})
            value = printed.get(aug)
            rows.append({
                "task": task, "aug": aug, "n_seeds": len(run.get("final_val_acc", listed)),
                "n_listed": len(listed), "n_reached": len(hit), "steps": hit,
                "mean": sum(hit) / len(hit) if hit else math.nan, "budget": budget,
                "table1": math.nan if value is None else float(value),
                "in_table1": aug in printed,
            })
    return pd.DataFrame(rows)


def fmt_published(row: pd.Series) -> str:
    """A published cell: mean over the seeds listed, saying how many of the run's seeds."""
    n, listed, hit = int(row["n_seeds"]), int(row["n_listed"]), int(row["n_reached"])
    if hit == listed and hit:
        return f"{row['mean']:.0f} ({listed} of {n} seeds listed)"
    if hit:
        return f"{row['mean']:.0f} ({hit} of {n} seeds reached)"
    if listed:
        return f"none reached ({listed} of {n} seeds listed at {int(row['budget'])})"
    return f"none reached (0 of {n} seeds listed)"


def versus_published(runs: pd.DataFrame, p: pd.Series) -> str:
    """Our seeds against the published ones (unlisted seeds censored at the budget), by the
    log-rank test (its method and the smallest p it could give stated); only when both ran
    the same budget."""
    ours = runs[(runs["task"] == p["task"]) & (runs["aug"] == p["aug"])]
    if ours.empty or set(ours["budget"]) != {p["budget"]}:
        return tx.DASH
    theirs = np.array(p["steps"] + [p["budget"]] * (int(p["n_seeds"]) - int(p["n_reached"])))
    test = logrank(ours["steps_to_99"].astype(float), tx.as_bool(ours["grokked"]), theirs,
                   np.arange(theirs.size) < int(p["n_reached"]))
    word = {"faster": "ours faster", "slower": "ours slower"}.get(
        comparison_verdict(test), f"not distinguishable with {len(ours)} vs {theirs.size} seeds")
    method = "exact" if test.method == "exact permutation" else test.method
    return f"{word} (log-rank p {tx.p_eq(test.p)}, {method}; floor {tx.fmt_p(test.p_floor)})"


def comparison_table(cells: pd.DataFrame, published: pd.DataFrame | None,
                     runs: pd.DataFrame | None) -> str:
    """Our steps to 99% beside the published runs', the paper's Table 1 and the test."""
    pub = {} if published is None else {(r.task, r.aug): r for _, r in published.iterrows()}
    rows = []
    for _, c in cells.iterrows():
        p = pub.get((c["task"], c["aug"]))
        rows.append({"task": c["task"], "aug": c["aug"], "ours": tx.cell_steps(c),
                     "published runs": tx.DASH if p is None else fmt_published(p),
                     "paper Table 1": tx.DASH if p is None else fmt_table1(p),
                     "ours vs published runs": tx.DASH if p is None or runs is None
                     else versus_published(runs, p)})
    return tx.markdown_table(pd.DataFrame(rows), align=["l", "l", "r", "r", "r", "l"])


def fmt_table1(row: pd.Series) -> str:
    if not row["in_table1"]:
        return "not in Table 1"
    return "N/A" if tx.missing(row["table1"]) else f"{row['table1']:.0f}"


def table1_check(published: pd.DataFrame) -> str:
    """How the paper's Table 1 relates to the published runs: agreement with the means of the
    listed seeds, entries that average fewer than all seeds, and what the budget and N/A mean."""
    numeric, agree, differ, partial, never, na = 0, 0, [], [], [], []
    for _, r in published[published["in_table1"]].iterrows():
        name, hit = f"{r['task']}/{r['aug']}", int(r["n_reached"])
        if tx.missing(r["table1"]):
            na.append(f"{name} ({hit} of {int(r['n_seeds'])} seeds reached 99%)")
            continue
        numeric += 1
        mean = r["mean"] if hit else float(r["budget"])
        if abs(mean - r["table1"]) <= 1:
            agree += 1
        else:
            differ.append(f"{name} ({r['table1']:.0f} vs {mean:.0f})")
        if not hit:
            never.append(name)
        elif hit < r["n_seeds"]:
            partial.append(f"{name}: {hit} of {int(r['n_seeds'])}")
    out = [f"Table 1 agrees with the mean of the listed seeds for {agree} of its {numeric} "
           "numbers" + (f"; it differs for {', '.join(differ)}." if differ else ".")]
    if partial:
        out.append(f"Some average only the seeds that reached 99% ({'; '.join(partial)}).")
    if never:
        out.append(f"Its {int(published['budget'].iloc[0])} for {', '.join(never)} is the "
                   "budget: no seed reached 99%.")
    if na:
        out.append(f"Its N/A entries are {', '.join(na)}.")
    return " ".join(out)


def reading(cells: pd.DataFrame, published: pd.DataFrame | None, budget: int,
            comparisons: pd.DataFrame | None = None) -> str:
    """Per task: the augmentation with the lowest mean updates to 99% in our runs and in the
    published runs (means, not tested), and what the test against the baseline says of it."""
    lines = []
    for task, group in cells.groupby("task", sort=False):
        ours = group[group["n_censored"] < group["n_seeds"]].sort_values(
            ["n_censored", "steps_to_99_mean"], kind="stable")
        if ours.empty:
            text = f"no augmentation reached 99% within {budget} updates in any seed"
        else:
            best, base = ours.iloc[0], group[group["aug"] == "baseline"]
            text = (f"lowest mean updates to 99%: {best['aug']} ({tx.cell_steps(best)}) "
                    f"{tx.NOT_TESTED}")
            if best["aug"] != "baseline" and len(base):
                text += f"; baseline: {tx.cell_steps(base.iloc[0])}"
                row = (None if comparisons is None else comparisons[
                    (comparisons["task"] == task) & (comparisons["value"] == best["aug"])])
                if row is not None and len(row):
                    r = row.iloc[0]
                    text += (f"; tested against the baseline: {st.fmt_verdict(r)}, time ratio "
                             f"{st.fmt_ratio(r)}")
        if published is not None:  # only the augmentations we ran: like with like
            pub = published[(published["task"] == task) & (published["n_reached"] > 0)
                            & published["aug"].isin(group["aug"])]
            if pub.empty:
                text += ". No published run of this task reached 99%"
            else:
                p = pub.sort_values("mean", kind="stable").iloc[0]
                same = not ours.empty and p["aug"] == ours.iloc[0]["aug"]
                text += (f". In the published runs the lowest mean was {p['aug']}, at "
                         f"{fmt_published(p)}: {'the same' if same else 'a different'} "
                         f"augmentation {tx.NOT_TESTED}")
        lines.append(f"- **{task}**: {text}.")
    return "\n".join(lines)


def leakage_table(cells: pd.DataFrame) -> str:
    """Reachable validation pairs beside validation and clean accuracy and both gaps."""
    rows = [{
        "task": c["task"], "aug": c["aug"], "val_reachable": f"{c['val_reachable_mean']:.3f}",
        "final val acc": tx.metric(c, "final_val_acc", 3),
        "clean val acc": tx.metric(c, "clean_val_acc", 3),  # NaN: no pair is clean
        "val − clean": tx.DASH if tx.missing(c["clean_val_acc_mean"])
        else f"{c['final_val_acc_mean'] - c['clean_val_acc_mean']:+.3f}",
        "relative gap": tx.metric(c, "relative_gap"),
        "relative gap (clean)": tx.metric(c, "relative_gap_clean"),
    } for _, c in cells.iterrows()]
    return tx.markdown_table(pd.DataFrame(rows), align=["l", "l"] + ["r"] * 6)


def leakage_reading(cells: pd.DataFrame) -> str:
    """Largest reachable fraction of validation pairs and the val/clean accuracy difference."""
    augmented = cells[cells["val_reachable_mean"] > 0]
    if augmented.empty:
        return "No validation pair is reachable from training in any cell (no leakage)."
    top = augmented.loc[augmented["val_reachable_mean"].idxmax()]
    diff = (augmented["final_val_acc_mean"] - augmented["clean_val_acc_mean"]).dropna()
    text = (f"Under augmentation up to {top['val_reachable_mean']:.0%} of validation pairs are "
            f"reachable from the training split ({top['task']}, {top['aug']}), so validation "
            "accuracy there partly measures pairs the model may have trained on.")
    if diff.empty:
        return text + " No augmented cell has clean pairs to compare with."
    worst = augmented.loc[diff.idxmax()]
    return text + (
        f" Across the {len(diff)} augmented cells with clean pairs, final validation accuracy "
        f"minus clean accuracy ranges from {diff.min():+.3f} to {diff.max():+.3f} (largest: "
        f"{worst['task']}, {worst['aug']}; {worst['final_val_acc_mean']:.3f} vs "
        f"{worst['clean_val_acc_mean']:.3f}). The clean curve is fitted too: `relative gap "
        "(clean)` is τ_clean/τ_train − 1, the delay on pairs no augmented example can equal.")


def body(ctx: Context, tables: StudyTables) -> list[str]:
    cells, budget = tables.cells, ctx.budget("augmentation")
    reference, table1 = ctx.reference(RUNS), ctx.reference(TABLE1)
    published = published_steps(reference, table1) if reference else None
    lines = ["### Steps to 99% validation accuracy", "", st.steps_pivot(cells, col="aug"),
             *st.notes(ctx, tables, budget), "",
             ctx.figure("augmentation_steps_to_99", plots.steps_to_99(cells, budget=budget),
                        "Steps to 99% per task and augmentation"),
             *st.fraction_figure(ctx, tables, "augmentation", "aug"),
             *st.curves(ctx, tables, "augmentation", "aug"),
             "", "### Comparison with the published numbers", ""]
    if reference is None:
        lines.append(f"_`references/{RUNS}.json` was not found; no comparison._")
    else:
        lines += [
            f"Published runs: {reference.get('source', 'reference runs')}. They list "
            "`step_val_acc_99` only for seeds that reached 99% — seeds that did not were "
            "dropped — so their means are over the listed seeds only, while ours count such "
            "seeds at the budget. The last column tests our seeds against theirs, their "
            "unlisted seeds censored at their budget (log-rank), where both ran the "
            f"same budget ({published['budget'].iloc[0]} updates; ours {budget}).", "",
            ("Paper Table 1 is the table printed in the paper "
             f"({table1['source']}). " + table1_check(published)) if table1 else
            f"_`references/{TABLE1}.json` was not found: no Table 1._", "",
            comparison_table(cells, published, tables.runs), "",
            "Notes on the reference runs:", "",
            *tx.bullets(reference.get("notes", []))]
    lines += ["", "### Final accuracy and leakage", "", leakage_table(cells), "",
              ctx.figure("augmentation_final_accuracy", plots.final_accuracy(cells),
                         "Final train and validation accuracy"),
              "", ctx.figure("augmentation_leakage", plots.leakage(cells),
                             "Validation accuracy vs reachable pairs"),
              "", "### Reading", "", reading(cells, published, budget, tables.comparisons), "",
              *st.comparison_reading(tables.comparisons, tables.across_tasks), "",
              leakage_reading(cells)]
    if published is not None:
        n_all, n_hit = int(published["n_seeds"].sum()), int(published["n_reached"].sum())
        lines += ["", f"The published runs list {n_hit} of {n_all} seeds as reaching 99%; the "
                  f"other {n_all - n_hit} are missing from their means (dropped, or listed at "
                  f"the {int(published['budget'].iloc[0])}-update budget), so those means "
                  "describe only the seeds that reached it."]
    return lines


SECTIONS = (Section("augmentation", "Augmentation study", body),)

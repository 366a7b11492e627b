"""Markdown pieces of the report: tables, censoring-aware numbers, the published numbers.

Pure functions: DataFrames and dicts in, strings out. Every sentence generated here states
something computed from the numbers it is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

DASH = "—"
REFERENCE_BUDGET = 7500  # updates of the published runs; a listed 7500 means "never reached"

# The augmentation paper's Table 1 (steps to 99% validation accuracy); None: "N/A" there.
PAPER_TABLE1: dict[tuple[str, str], int | None] = {
    (task, aug): value
    for task, values in {
        "x_plus_y": (2363, 1993, 1000, 920),
        "x_minus_y": (4720, 5160, 1343, 1057),
        "x_div_y": (4200, 4500, 1443, 1767),
        "permutation": (7500, None, None, 6925),
    }.items()
    for aug, value in zip(("baseline", "reversal", "negation", "combined15"), values, strict=True)
}


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def as_bool(s: pd.Series) -> pd.Series:
    """A flag column as booleans: CSV round trips can leave "True"/"False" strings (or
    1/0), and ``bool("False")`` is True."""
    if s.dtype == bool:
        return s
    return s.astype(str).str.strip().str.lower().isin(["true", "1", "1.0"])


def markdown_table(df: pd.DataFrame, *, align: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured markdown table of ``df`` (no index); numbers right-aligned.

    ``align`` gives one of "l", "r", "c" per column; missing values print as a dash.
    """
    if align is None:
        align = ["r" if pd.api.types.is_numeric_dtype(df[c]) else "l" for c in df.columns]
    rule = {"l": ":---", "r": "---:", "c": ":---:"}

    def cell(v: Any) -> str:
        return DASH if _missing(v) else str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in df.columns) + " |",
             "| " + " | ".join(rule[a] for a in align) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines)


def fmt_mean_ci(mean: float, ci_low: float = math.nan, ci_high: float = math.nan,
                digits: int = 0) -> str:
    """``mean ± half-width`` of the 95% interval; just the mean when there is no interval."""
    if _missing(mean):
        return DASH
    if _missing(ci_low) or _missing(ci_high):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(ci_high - ci_low) / 2:.{digits}f}"


def fmt_steps(mean: float, ci_low: float, ci_high: float, *, n_censored: int,
              n_seeds: int) -> str:
    """Steps to 99%: ``mean ± half-interval``, or a lower bound ``≥ mean (k/n grokked)``.

    Censored seeds are counted at the budget, so with any of them the mean only bounds the
    true mean from below and an interval around it would be misleading.
    """
    if _missing(mean):
        return DASH
    if n_censored:
        return f"≥ {mean:.0f} ({n_seeds - n_censored}/{n_seeds} grokked)"
    return fmt_mean_ci(mean, ci_low, ci_high)


def cell_steps(row: pd.Series) -> str:
    """:func:`fmt_steps` of one row of a ``*_cells.csv`` table."""
    return fmt_steps(row["steps_to_99_mean"], row["steps_to_99_ci_low"],
                     row["steps_to_99_ci_high"], n_censored=int(row["n_censored"]),
                     n_seeds=int(row["n_seeds"]))


def published_steps(reference: dict[str, Any], *, budget: int = REFERENCE_BUDGET) -> pd.DataFrame:
    """Steps to 99% of the published runs, one row per (task, aug).

    ``step_val_acc_99`` lists only seeds that reached 99% (and 7500 where none did), so
    ``mean`` is over ``n_reached`` seeds; ``n_seeds`` is how many seeds were run.
    """
    rows = []
    for aug, tasks in reference["runs"].items():
        for task, run in tasks.items():
            listed = [float(v) for v in run.get("step_val_acc_99", [])]
            reached = [v for v in listed if v < budget]
            rows.append({
                "task": task, "aug": aug, "n_seeds": len(run.get("final_val_acc", listed)),
                "n_listed": len(listed), "n_reached": len(reached),
                "mean": sum(reached) / len(reached) if reached else math.nan,
                "table1": PAPER_TABLE1.get((task, aug), math.nan),
            })
    return pd.DataFrame(rows)


def fmt_published(row: pd.Series, budget: int = REFERENCE_BUDGET) -> str:
    """A published cell: mean over the seeds listed, saying how many of the run's seeds."""
    n, listed, reached = int(row["n_seeds"]), int(row["n_listed"]), int(row["n_reached"])
    if reached == listed and reached:
        return f"{row['mean']:.0f} ({listed} of {n} seeds listed)"
    if reached:
        return f"{row['mean']:.0f} ({reached} of {n} seeds reached)"
    if listed:
        return f"none reached ({listed} of {n} seeds listed at {budget})"
    return f"none reached (0 of {n} seeds listed)"


def _fmt_table1(task: str, aug: str) -> str:
    if (task, aug) not in PAPER_TABLE1:
        return "not in Table 1"
    value = PAPER_TABLE1[(task, aug)]
    return "N/A" if value is None else str(value)


def comparison_table(cells: pd.DataFrame, published: pd.DataFrame | None) -> str:
    """Our steps to 99% beside the published runs' and the paper's Table 1, per task × aug."""
    pub = {} if published is None else {(r.task, r.aug): r for _, r in published.iterrows()}
    rows = []
    for _, c in cells.iterrows():
        p = pub.get((c["task"], c["aug"]))
        rows.append({
            "task": c["task"], "aug": c["aug"], "ours": cell_steps(c),
            "published runs": DASH if p is None else fmt_published(p),
            "paper Table 1": _fmt_table1(c["task"], c["aug"]),
        })
    return markdown_table(pd.DataFrame(rows), align=["l", "l", "r", "r", "r"])


def table1_check(published: pd.DataFrame) -> str:
    """How the paper's Table 1 relates to the published runs: agreement with the means of the
    listed seeds, entries that average fewer than all seeds, and what 7500 and N/A stand for."""
    numeric, agree, differ, partial, never, na = 0, 0, [], [], [], []
    for _, r in published.iterrows():
        key, name = (r["task"], r["aug"]), f"{r['task']}/{r['aug']}"
        if key not in PAPER_TABLE1:
            continue
        value, reached = PAPER_TABLE1[key], int(r["n_reached"])
        if value is None:
            na.append(f"{name} ({reached} of {int(r['n_seeds'])} seeds reached 99%)")
            continue
        numeric += 1
        runs = r["mean"] if reached else float(REFERENCE_BUDGET)
        if abs(runs - value) <= 1:
            agree += 1
        else:
            differ.append(f"{name} ({value} vs {runs:.0f})")
        if not reached:
            never.append(name)
        elif reached < r["n_seeds"]:
            partial.append(f"{name}: {reached} of {int(r['n_seeds'])}")
    out = [f"Table 1 agrees with the mean of the listed seeds for {agree} of its {numeric} "
           "numbers" + (f"; it differs for {', '.join(differ)}." if differ else ".")]
    if partial:
        out.append(f"Some average only the seeds that grokked ({'; '.join(partial)}).")
    if never:
        out.append(f"Its {REFERENCE_BUDGET} for {', '.join(never)} is the budget: no seed "
                   "reached 99%.")
    if na:
        out.append(f"Its N/A entries are {', '.join(na)}.")
    return " ".join(out)


def _ranked(cells: pd.DataFrame) -> pd.DataFrame:
    # Fully grokked cells first (fewest censored seeds), then by mean steps to 99%.
    grokked = cells[cells["n_censored"] < cells["n_seeds"]]
    return grokked.sort_values(["n_censored", "steps_to_99_mean"], kind="stable")


def reading(cells: pd.DataFrame, published: pd.DataFrame | None, *, budget: int) -> str:
    """Bullet points stating, per task, which augmentation reached 99% first in our runs and
    in the published runs, then how much validation accuracy could be leakage."""
    lines = []
    for task, group in cells.groupby("task", sort=False):
        ours = _ranked(group)
        if ours.empty:
            text = f"no augmentation reached 99% within {budget} updates in any seed"
        else:
            best = ours.iloc[0]
            text = f"{best['aug']} reached 99% first ({cell_steps(best)} updates)"
            base = group[group["aug"] == "baseline"]
            if best["aug"] != "baseline" and len(base):
                b = base.iloc[0]
                text += f"; baseline: {cell_steps(b)}"
                if not b["n_censored"] and not best["n_censored"]:
                    ratio = b["steps_to_99_mean"] / best["steps_to_99_mean"]
                    text += f" ({ratio:.1f}× as many updates)"
        if published is not None:
            # Only the augmentations we ran, so "fastest" compares like with like.
            pub = published[(published["task"] == task) & (published["n_reached"] > 0)
                            & published["aug"].isin(group["aug"])]
            if pub.empty:
                text += ". No published run of this task reached 99%"
            else:
                p = pub.sort_values("mean", kind="stable").iloc[0]
                same = not ours.empty and p["aug"] == ours.iloc[0]["aug"]
                text += (f". In the published runs the fastest was {p['aug']}, at "
                         f"{fmt_published(p)}: {'the same' if same else 'a different'} "
                         "augmentation")
        lines.append(f"- **{task}**: {text}.")
    return "\n".join(lines)


def leakage_reading(cells: pd.DataFrame) -> str:
    """Largest reachable fraction of validation pairs and the val/clean accuracy difference."""
    augmented = cells[cells["val_reachable_mean"] > 0]
    if augmented.empty:
        return "No validation pair is reachable from training in any cell (no leakage)."
    top = augmented.loc[augmented["val_reachable_mean"].idxmax()]
    diff = augmented["final_val_acc_mean"] - augmented["clean_val_acc_mean"]
    worst = augmented.loc[diff.idxmax()]
    return (
        f"Under augmentation up to {top['val_reachable_mean']:.0%} of validation pairs are "
        f"reachable from the training split ({top['task']}, {top['aug']}), so validation "
        "accuracy there partly measures pairs the model may have trained on. Across the "
        f"{len(augmented)} cells with reachable pairs, final validation accuracy minus "
        f"accuracy on the clean (unreachable) pairs ranges from {diff.min():+.3f} to "
        f"{diff.max():+.3f} (largest: {worst['task']}, {worst['aug']}; "
        f"{worst['final_val_acc_mean']:.3f} vs {worst['clean_val_acc_mean']:.3f})."
    )


def _acc(row: pd.Series, metric: str) -> str:
    return fmt_mean_ci(row[f"{metric}_mean"], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"],
                       digits=3)


def experiment_table(cells: pd.DataFrame) -> str:
    """One row per task: steps to 99%, seeds grokked, final accuracies and fit ratios."""
    rows = [{
        "task": c["task"], "steps to 99%": cell_steps(c),
        "grokked": f"{int(c['n_seeds'] - c['n_censored'])}/{int(c['n_seeds'])}",
        "final train acc": _acc(c, "final_train_acc"), "final val acc": _acc(c, "final_val_acc"),
        "relative gap": fmt_mean_ci(c["relative_gap_mean"], c["relative_gap_ci_low"],
                                    c["relative_gap_ci_high"], digits=2),
        "relative sharpness": fmt_mean_ci(c["relative_sharpness_mean"],
                                          c["relative_sharpness_ci_low"],
                                          c["relative_sharpness_ci_high"], digits=2),
        "fits ok": f"{int(c['n_fit_ok'])}/{int(c['n_seeds'])}",
    } for _, c in cells.iterrows()]
    return markdown_table(pd.DataFrame(rows), align=["l"] + ["r"] * 7)


def steps_pivot(cells: pd.DataFrame, *, row: str = "task", col: str = "aug") -> str:
    """Steps to 99% with ``row`` values down and ``col`` values across."""
    table = cells.assign(steps=[cell_steps(c) for _, c in cells.iterrows()])
    wide = table.pivot(index=row, columns=col, values="steps")
    wide = wide.loc[list(dict.fromkeys(cells[row])), list(dict.fromkeys(cells[col]))]
    return markdown_table(wide.reset_index(), align=["l"] + ["r"] * len(wide.columns))


def leakage_table(cells: pd.DataFrame) -> str:
    """Reachable fraction of validation pairs beside validation and clean accuracy."""
    rows = [{
        "task": c["task"], "aug": c["aug"],
        "val_reachable": f"{c['val_reachable_mean']:.3f}",
        "final val acc": _acc(c, "final_val_acc"),
        # With every validation pair reachable there are no clean pairs to score.
        "clean val acc": DASH if c["val_reachable_mean"] >= 1 else _acc(c, "clean_val_acc"),
        "val − clean": DASH if c["val_reachable_mean"] >= 1
        else f"{c['final_val_acc_mean'] - c['clean_val_acc_mean']:+.3f}",
    } for _, c in cells.iterrows()]
    return markdown_table(pd.DataFrame(rows), align=["l", "l", "r", "r", "r", "r"])


def censoring_note(cells: pd.DataFrame, *, budget: int) -> str:
    """How many seeds never reached 99%, and how they are counted."""
    n_cens, n_all = int(cells["n_censored"].sum()), int(cells["n_seeds"].sum())
    n_cells = int((cells["n_censored"] > 0).sum())
    return (f"{n_cens} of {n_all} seeds (in {n_cells} of {len(cells)} cells) never reached 99% "
            f"validation accuracy within the budget of {budget} updates. They are counted at "
            "the budget, not dropped, so a cell marked `≥` shows a lower bound on its mean.")


def fit_failures(runs: pd.DataFrame) -> str:
    """Count of failed erf fits per curve, by reason (the text before the first colon)."""
    parts = []
    for prefix, name in (("train_fit", "training"), ("val_fit", "validation")):
        ok = as_bool(runs[f"{prefix}_ok"])
        reasons = runs.loc[~ok, f"{prefix}_reason"].fillna("unknown").astype(str)
        counts = reasons.str.split(":").str[0].value_counts()
        detail = ", ".join(f"{reason}: {n}" for reason, n in counts.items())
        parts.append(f"{int((~ok).sum())} of {len(runs)} {name} fits failed"
                     + (f" ({detail})" if detail else ""))
    return "; ".join(parts) + "."


def published_dropped(published: pd.DataFrame) -> str:
    """How many published seeds are missing from the published means."""
    n_all, n_reached = int(published["n_seeds"].sum()), int(published["n_reached"].sum())
    return (f"The published runs list {n_reached} of {n_all} seeds as reaching 99%; the "
            f"other {n_all - n_reached} are missing from their means (dropped, or listed at "
            f"the {REFERENCE_BUDGET}-update budget), so those means describe only the seeds "
            "that grokked.")

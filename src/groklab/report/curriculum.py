"""The curriculum study beside the curriculum paper: Tables 1-4 and the ablation.

``paper`` is ``references/curriculum_paper_tables.json`` as loaded by :func:`json.loads`.
The paper does not say which split its Table 1 / Table 4 "Accuracy" and "Loss" are; we
compare them with final validation accuracy and loss, because Table 1's losses equal
Table 2's validation losses. Pure functions: DataFrames and dicts in, markdown out.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from groklab.report import plots
from groklab.report import study as st
from groklab.report import text as tx
from groklab.report.context import Context, Section, StudyTables

# Table 4's rows as our schedules: the full method is a pacing of the difficulty pool (we run
# three pacings: linear, sqrt, step); "without difficulty parameter" grows the pool at the same
# pace in random order; "without curriculum learning" is the baseline.
ABLATION: tuple[tuple[str, str, str | None], ...] = (
    ("Full method", "linear", "Full method"),
    ("Full method, sqrt pacing", "sqrt", None),
    ("Full method, step pacing", "step", None),
    ("Without difficulty parameter", "random", "Without difficulty parameter"),
    ("Without curriculum learning", "none", "Without curriculum learning"),
    ("Not in the paper: hardest first", "anti", None),
)
N_CLASSES = {"permutation": 120}  # chance accuracy and uniform-guess loss of the paper's tasks


def paper_number(v: Any) -> str:
    """A published number with up to 6 significant digits (``1.0`` stays ``1.0``)."""
    if v is None:
        return tx.DASH
    s = f"{float(v):.6g}"
    return s if any(ch in s for ch in ".e") else s + ".0"


def _row(cells: pd.DataFrame, task: str, schedule: str) -> pd.Series | None:
    rows = cells[(cells["task"] == task) & (cells["curriculum"] == schedule)]
    return None if rows.empty else rows.iloc[0]


def _tasks(cells: pd.DataFrame, paper: dict[str, Any]) -> list[str]:
    # The paper's tasks first (its tables list all four), then any others we ran.
    listed = list(paper["tables"]["table1"]["rows"])
    return listed + [t for t in dict.fromkeys(cells["task"]) if t not in listed]


def baseline_table(cells: pd.DataFrame, paper: dict[str, Any]) -> str:
    """Our ``none`` schedule beside the paper's baseline Tables 1 and 2, per task."""
    t1, t2 = paper["tables"]["table1"]["rows"], paper["tables"]["table2"]["rows"]
    rows = []
    for task in _tasks(cells, paper):
        c = _row(cells, task, "none")
        p1, p2 = t1.get(task, {}), t2.get(task, {})
        rows.append({
            "task": task,
            "final train loss (ours)": tx.metric(c, "final_train_loss"),
            "Table 2 train loss": paper_number(p2.get("final_train_loss")),
            "final val loss (ours)": tx.metric(c, "final_val_loss"),
            "Table 2 val loss": paper_number(p2.get("final_val_loss")),
            "Table 1 loss": paper_number(p1.get("loss")),
            "final val acc (ours)": tx.metric(c, "final_val_acc", 3),
            "Table 1 accuracy": paper_number(p1.get("accuracy")),
        })
    return tx.markdown_table(pd.DataFrame(rows), align=["l"] + ["r"] * 7)


def curriculum_table(cells: pd.DataFrame, paper: dict[str, Any],
                     schedule: str = "linear") -> str:
    """Our ``schedule`` beside the paper's curriculum Table 3 (final accuracies), per task."""
    t3 = paper["tables"]["table3"]["rows"]
    rows = []
    for task in _tasks(cells, paper):
        c, p = _row(cells, task, schedule), t3.get(task, {})
        rows.append({
            "task": task,
            f"final train acc (ours, {schedule})": tx.metric(c, "final_train_acc", 3),
            "Table 3 train acc": paper_number(p.get("final_train_acc")),
            f"final val acc (ours, {schedule})": tx.metric(c, "final_val_acc", 3),
            "Table 3 val acc": paper_number(p.get("final_val_acc")),
        })
    return tx.markdown_table(pd.DataFrame(rows), align=["l", "r", "r", "r", "r"])


def _acc_loss(c: pd.Series | None) -> str:
    if c is None:
        return tx.DASH
    return f"{c['final_val_acc_mean']:.3f} / {c['final_val_loss_mean']:.3g}"


def ablation_table(cells: pd.DataFrame, paper: dict[str, Any] | None) -> str:
    """Table 4 rebuilt from our runs: final validation accuracy / loss (means over seeds) per
    task for each ablation row, beside the paper's (which does not name its task)."""
    t4 = None if paper is None else paper["tables"]["table4"]["rows"]
    tasks = list(dict.fromkeys(cells["task"]))
    rows = []
    for label, schedule, paper_row in ABLATION:
        if not (cells["curriculum"] == schedule).any():
            continue
        row = {"ablation": label, "schedule": f"`{schedule}`",
               **{f"{t}: acc / loss": _acc_loss(_row(cells, t, schedule)) for t in tasks}}
        if t4 is not None:
            p = t4.get(paper_row or "", {})
            row |= {"Table 4 accuracy": paper_number(p.get("accuracy")),
                    "Table 4 loss": paper_number(p.get("loss"))}
        rows.append(row)
    table = pd.DataFrame(rows)
    return tx.markdown_table(table, align=["l", "l"] + ["r"] * (len(table.columns) - 2))


def _close(a: float, b: float, digits: int = 4) -> bool:
    """Equal to ``digits`` decimals, rounded or truncated (the paper does both)."""
    return abs(float(a) - float(b)) < 10.0 ** -digits


def paper_inconsistencies(paper: dict[str, Any]) -> list[str]:
    """Places where the paper's numbers contradict each other or its text, found by comparing
    its tables (each item says which numbers disagree)."""
    t1, t2, t3, t4 = (paper["tables"][f"table{i}"]["rows"] for i in range(1, 5))
    claims = (paper.get("text_claims") or {}).get("final_val_acc", {})
    out = []
    for task, claimed in claims.items():
        val, train = (t3.get(task, {}).get(f"final_{s}_acc") for s in ("val", "train"))
        if val is not None and not _close(claimed, val):
            same = train is not None and _close(claimed, train)
            out.append(f"The text claims a final validation accuracy of {paper_number(claimed)} "
                       f"on {task}, but Table 3 gives {paper_number(val)}"
                       + (f"; {paper_number(claimed)} is Table 3's final *training* accuracy "
                          f"({paper_number(train)})" if same else "") + ".")
    for task, row in t1.items():
        val, train = (t3.get(task, {}).get(f"final_{s}_acc") for s in ("val", "train"))
        if train is not None and val is not None and not _close(train, val) \
                and _close(row["accuracy"], train):
            out.append(f"Table 1 (baseline) lists {task} accuracy {paper_number(row['accuracy'])}"
                       f": Table 3's (curriculum) *training* accuracy, not a baseline or a "
                       "validation number.")
    matches = [task for task, row in t1.items()
               if task in t2 and _close(row["loss"], t2[task]["final_val_loss"])]
    if matches:
        out.append(f"Table 1's losses equal Table 2's final *validation* losses (to 4 decimals) "
                   f"for {len(matches)} of {len(t1)} tasks, so Table 1 is a validation loss "
                   "beside an accuracy whose split it does not state.")
    for task, n in N_CLASSES.items():
        loss = t2.get(task, {}).get("final_val_loss")
        val, claimed = t3.get(task, {}).get("final_val_acc"), claims.get(task)
        if loss is not None and loss > math.log(n):
            out.append(f"The {task} validation loss {paper_number(loss)} exceeds ln {n} = "
                       f"{math.log(n):.2f}, the loss of a uniform guess over its {n} classes; "
                       f"it goes with Table 3's validation accuracy {paper_number(val)} (chance "
                       f"1/{n} = {1 / n:.4f})"
                       + (f", not with the {paper_number(claimed)} the text claims"
                          if claimed is not None and val is not None
                          and not _close(claimed, val) else "") + ".")
    full = t4.get("Full method")
    if full:
        same = [task for task, row in t1.items()
                if _close(row["accuracy"], full["accuracy"]) and _close(row["loss"], full["loss"])]
        if same:
            out.append(f"Table 4's full method ({paper_number(full['accuracy'])}, "
                       f"{paper_number(full['loss'])}) is exactly Table 1's *baseline* row for "
                       f"{', '.join(same)}; Table 4 does not name its task.")
    base = t4.get("Without curriculum learning")
    if base and not any(_close(r["accuracy"], base["accuracy"]) for r in t1.values()):
        out.append(f"Table 4's 'without curriculum learning' (the baseline) has accuracy "
                   f"{paper_number(base['accuracy'])}, but no baseline row in Table 1 has that "
                   "accuracy.")
    acc, loss = (np.array([r[k] for r in t4.values()], float) for k in ("accuracy", "loss"))
    if len(acc) > 2 and np.allclose(np.diff(acc), np.diff(acc)[0]) \
            and np.allclose(np.diff(loss), np.diff(loss)[0]):
        out.append(f"Table 4's rows step by exactly {np.diff(acc)[0]:+.2g} accuracy and "
                   f"{np.diff(loss)[0]:+.2g} loss from one row to the next.")
    return out


def ablation_reading(cells: pd.DataFrame) -> str:
    """Per task: do full method (linear) < without difficulty (random) < without curriculum
    (none) order the same way in our mean final validation loss as in the paper's Table 4?
    A description of means, marked as not tested."""
    order = [s for _, s, p in ABLATION if p]  # linear, random, none: Table 4's order
    lines = []
    for task, group in cells.groupby("task", sort=False):
        rows = {s: _row(group, task, s) for s in order}
        if any(r is None for r in rows.values()):
            continue
        loss = {s: float(r["final_val_loss_mean"]) for s, r in rows.items()}
        acc = {s: float(r["final_val_acc_mean"]) for s, r in rows.items()}
        ranked = sorted(order, key=lambda s: loss[s])
        same = ranked == order
        lines.append(
            f"- **{task}**: final validation loss " + ", ".join(
                f"`{s}` {loss[s]:.3g} (acc {acc[s]:.3f})" for s in order)
            + f"; lowest to highest mean loss: {' < '.join(f'`{s}`' for s in ranked)} — "
            + ("the paper's order in the means" if same else "not the paper's order "
               "(linear < random < none) in the means") + f" {tx.NOT_TESTED}.")
    return "\n".join(lines)


COLUMNS = ("steps to 99%", "reached 99%", "groks", "final train acc", "final val acc",
           "final train loss", "final val loss", "relative gap", "fits ok")
PAPER = "curriculum_paper_tables"


def body(ctx: Context, tables: StudyTables) -> list[str]:
    cells, budget = tables.cells, ctx.budget("curriculum")
    paper = ctx.reference(PAPER)
    c, step = (ctx.params["curricula"].get(k, {}) for k in ("linear", "step"))
    lines = [
        f"Pacing (`curricula`): `linear` starts the pool at the easiest {c.get('start', '?')} "
        f"of the training split and grows it to all of it over the first {c.get('ramp', '?')} "
        f"of training; `sqrt` grows it as a square root; `step` grows it by "
        f"{step.get('step_size', '?')} once training accuracy on the pool reaches "
        f"{step.get('step_threshold', '?')}. `random` grows the pool at `linear`'s pace in "
        "random order (no difficulty); `anti` takes the hardest first; `none` is the "
        "baseline.", "",
        "### Steps to 99% validation accuracy", "", st.steps_pivot(cells, col="curriculum"),
        *st.steps_bars(ctx, tables, "curriculum", "curriculum"),
        *st.fraction_figure(ctx, tables, "curriculum", "curriculum"),
        "", "### Final accuracy and loss", "", st.study_table(cells, "curriculum", COLUMNS),
        *st.notes(ctx, tables, budget), "",
        ctx.figure("curriculum_final_accuracy", plots.final_accuracy(cells, hue="curriculum"),
                   "Final train and validation accuracy per schedule"),
        *st.curves(ctx, tables, "curriculum", "curriculum"),
        "", "### Ablation (the paper's Table 4) rebuilt from our runs", "",
        "The paper's *full method* is a difficulty curriculum; we read it as the `linear` "
        "schedule and also show the `sqrt` and `step` pacings. *Without difficulty parameter* "
        "is `random` (same pool sizes, random order) and *without curriculum learning* is "
        "`none`. Cells: final validation accuracy / final validation loss, means over seeds"
        + (" (intervals in the table above)" if cells["n_seeds"].max() > 1 else
           " (one seed: no interval)")
        + ". Table 4 does not say which task it reports, so its numbers stand beside every "
        "task.", ""]
    if paper is None:
        lines.append(f"_`references/{PAPER}.json` was not found; the paper's numbers are not "
                     "shown._")
    lines.append(ablation_table(cells, paper))
    if paper is not None:
        lines += ["", "### Beside the paper's Tables 1–3", "",
                  "Tables 1 and 2 are the paper's *baseline* (no curriculum); we compare them "
                  "with our `none` schedule. Table 3 is its *curriculum* result; we compare it "
                  "with `linear`.", "", baseline_table(cells, paper), "",
                  curriculum_table(cells, paper), "",
                  f"Source: {paper.get('source', 'the curriculum paper').rstrip('.')}. "
                  f"{paper.get('settings', '')}"]
    lines += st.reading(cells, "curriculum", budget, tables)
    ablation = ablation_reading(cells)
    if ablation:
        lines += ["", "Table 4's order (full method < without difficulty < without curriculum, "
                  "by loss) in our final validation losses:", "", ablation]
    if paper is not None:
        lines += ["", "Where the paper's numbers contradict each other:", "",
                  *tx.bullets(paper_inconsistencies(paper))]
    return lines


SECTIONS = (Section("curriculum", "Curriculum study", body),)

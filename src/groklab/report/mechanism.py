"""The mechanism study (Nanda et al. 2023; the Exploring Grokking paper's one-MLP-layer model):
Fourier progress measures beside the accuracy curves, the mechanism events as censored
times, and the papers' claims (``references/mechanism_claims.json``). Also the events of the
measured base runs (x_plus_y, x_minus_y) and each study's event comparisons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from groklab.cells import studies
from groklab.report import plots
from groklab.report import study as st
from groklab.report import text as tx
from groklab.report.context import Context, Section, StudyTables

REF = "mechanism_claims"
EVENTS = (("circuit", "circuit formation"), ("cleanup", "cleanup"))


def measures_figure(history: pd.DataFrame, measures: pd.DataFrame, title: str) -> Figure:
    """Four panels on one step axis, mean of seeds with a min-max band: accuracy (solid
    validation, dashed training), restricted and excluded loss (log), Gini of the
    embedding's frequency norms, squared weight norm."""
    panels = (("accuracy", (("val_acc", "-", "validation"), ("train_acc", "--", "training")),
               history),
              ("loss (nats)", (("restricted_loss", "-", "restricted"),
                               ("excluded_loss", "--", "excluded")), measures),
              ("Gini", (("gini", "-", "Gini of frequency norms"),), measures),
              ("Σ w²", (("weight_norm_sq", "-", "squared weight norm"),), measures))
    with plots.style():
        fig = Figure(figsize=(7.5, 8.0), layout="constrained")
        axes = fig.subplots(len(panels), 1, sharex=True)
        for ax, (label, series, frame) in zip(axes, panels, strict=True):
            for col, ls, name in series:
                stats = frame.groupby("step")[col].agg(["mean", "min", "max"])
                t = stats.index.to_numpy(float)
                ax.plot(t, stats["mean"], ls=ls, lw=1.5, color=".15", label=name)
                ax.fill_between(t, stats["min"], stats["max"], color=".15", alpha=0.15, lw=0)
            ax.set_ylabel(label)
            if label.startswith("loss"):
                ax.set_yscale("log")
            if len(series) > 1:
                ax.legend(loc="best", fontsize="small")
        axes[-1].set_xlabel("updates")
        fig.suptitle(title)
    return fig


def _measured_cells(ctx: Context, tables: StudyTables | None) -> list[tuple[str, Path]]:
    """(cell, folder) of every cell of ``tables`` with a measures.csv."""
    if tables is None or ctx.models_dir is None:
        return []
    out = []
    for _, cell in tables.cells.iterrows():
        folder = Path(ctx.models_dir) / str(cell["path"])
        if (folder / "measures.csv").exists() and (folder / "history.csv").exists():
            out.append((str(cell["cell"]), folder))
    return out


def _median(values: pd.Series) -> str:
    return tx.DASH if values.empty else f"{np.median(values.astype(float)):.0f}"


def events_table(runs: pd.DataFrame, factor: str | None) -> str:
    """Per measured cell: seeds with each event, median event step (censored seeds at the
    budget), median lag to the validation jump over seeds with both, and the seeds in Nanda
    et al.'s order (circuit formation <= cleanup <= validation jump, all observed)."""
    rows = []
    measured = runs[runs["circuit_step"].notna()] if "circuit_step" in runs else runs.iloc[:0]
    keys = ["task", *([factor] if factor else [])]
    for key, g in measured.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row = {k: (f"`{v}`" if k != "task" else v) for k, v in zip(keys, key, strict=True)}
        val = tx.as_bool(g["grokked"])
        row["val 99%: seeds, median"] = f"{int(val.sum())}/{len(g)}, {_median(g['steps_to_99'])}"
        for event, name in EVENTS:
            hit = tx.as_bool(g[f"{event}_reached"])
            lag = g[f"{event}_lag"].dropna()
            row[f"{name}: seeds, median"] = (f"{int(hit.sum())}/{len(g)}, "
                                             f"{_median(g[f'{event}_step'])}")
            row[f"{name}: median lag"] = tx.DASH if lag.empty else f"{np.median(lag):+.0f}"
        row["Nanda order"] = tx.frac(nanda_order(g))
        rows.append(row)
    if not rows:
        return "_No measured cell._"
    return tx.markdown_table(pd.DataFrame(rows))


def nanda_order(runs: pd.DataFrame) -> np.ndarray:
    """Per seed: circuit formation, then cleanup, then the validation jump, all observed."""
    seen = (tx.as_bool(runs["circuit_reached"]) & tx.as_bool(runs["cleanup_reached"])
            & tx.as_bool(runs["grokked"])).to_numpy()
    c, k, v = (runs[c].astype(float).to_numpy() for c in
               ("circuit_step", "cleanup_step", "steps_to_99"))
    return seen & (c <= k) & (k <= v)


def claim_verdicts(runs: pd.DataFrame, spec: dict) -> list[tx.Verdict]:
    """Nanda et al.'s ordering, and the Exploring Grokking paper's 200 / 9.1k updates, against
    the mechanism study's x_plus_y runs."""
    out = []
    rows = runs[runs["task"] == "x_plus_y"]
    if rows.empty:
        return out
    if "circuit_step" in rows and rows["circuit_step"].notna().all():
        order = nanda_order(rows)
        decided = (tx.as_bool(rows["circuit_reached"]) & tx.as_bool(rows["cleanup_reached"])
                   & tx.as_bool(rows["grokked"])).to_numpy()
        agrees = None if not decided.any() else bool(order[decided].all())
        out.append(tx.Verdict(
            f"circuit formation, cleanup and the validation jump came in that order in "
            f"{tx.frac(order)} x_plus_y seeds ({int(decided.sum())} had all three events)",
            spec.get("ordering", "Nanda et al. order them circuit formation, cleanup, jump"),
            agrees, "our key frequencies are chosen online from the embedding "
                    "(docs/mechanism.md) while Nanda et al. fix the final model's"))
    for col, key, what in (("steps_to_99_train", "train_100_by", "training accuracy"),
                           ("steps_to_99", "val_100_around", "validation accuracy")):
        claim = spec.get(key)
        if claim is None:
            continue
        steps = rows[col].astype(float)
        hit = tx.as_bool(rows["train_reached" if col.endswith("train") else "grokked"])
        inside = bool(hit.all()) and steps.min() <= claim <= steps.max() if len(steps) > 1 \
            else None
        out.append(tx.Verdict(
            f"{what} reached 99% at updates {', '.join(f'{s:.0f}' for s in steps)} "
            f"({int(hit.sum())} of {len(rows)} seeds)",
            f"the Exploring Grokking paper reports about {claim:g} (one run, no spread; "
            "ours agree when it lies within our seeds' range)",
            None if inside is None or not hit.any() else inside,
            "their p, initialisation and optimiser settings are not stated; ours are Nanda "
            "et al.'s"))
    return out


def body(ctx: Context, tables: StudyTables) -> list[str]:
    spec, quoted = st.claims(ctx, REF, "mechanism")
    lines = ["What *why* looks like beside *when*: the Fourier progress measures of "
             "docs/mechanism.md on every measured cell, and the mechanism events as censored "
             "times (circuit formation: restricted loss ≤ "
             f"{ctx.params['analysis']['circuit_below']} nats; cleanup: excluded loss ≥ "
             f"{ctx.params['analysis']['cleanup_above']} nats after training reached 99%).",
             *st.notes(ctx, tables, ctx.budget("mechanism"))]
    sources = [("mechanism", tables), *[(name, ctx.studies.get(name)) for name in
                                        ("augmentation",) if ctx.studies.get(name)]]
    figures = []
    for study, t in sources:
        for cell, folder in _measured_cells(ctx, t):
            if study != "mechanism" and folder.parent.name != "baseline":
                continue  # the figures: the mechanism cells and the measured base runs
            title = f"Mechanism: {cell} ({folder.parent.name})"
            fig = measures_figure(pd.read_csv(folder / "history.csv"),
                                  pd.read_csv(folder / "measures.csv"), title)
            figures += ["", ctx.figure(f"mechanism_{folder.parent.name}_{folder.name}", fig,
                                       title)]
    if ctx.models_dir is None:
        figures = ["", "_No models folder given: no measures figures._"]
    lines += figures
    lines += ["", "### Events", ""]
    if tables.runs is not None:
        lines += [events_table(tables.runs, "arch")]
        if "circuit_step" in tables.runs and tables.runs["circuit_step"].notna().any():
            for event, name in EVENTS:
                title = f"Mechanism study: fraction of seeds past {name} (Kaplan-Meier)"
                fig = plots.fraction_reached(tables.runs, hue="arch", title=title,
                                             time_col=f"{event}_step",
                                             reached_col=f"{event}_reached",
                                             ylabel=f"fraction past {name}")
                lines += ["", ctx.figure(f"mechanism_{event}_km", fig, title)]
    for name, t in ctx.studies.items():
        if name == "mechanism" or t is None or t.runs is None:
            continue
        factor = studies(ctx.params)[name].factor.split(".")[-1] if name in studies(
            ctx.params) else None
        if "circuit_step" in t.runs and t.runs["circuit_step"].notna().any():
            lines += ["", f"**{name}** (measured tasks):", "", events_table(t.runs, factor)]
            versus = _event_comparisons(ctx, name)
            if versus is not None and not versus.empty:
                for event, label in EVENTS:
                    rows = versus[versus["event"] == event]
                    if len(rows):
                        lines += ["", f"{label} against the default value (log-rank, "
                                  "censored at the budget):", "", st.comparison_table(rows)]
    lines += st.published(quoted)
    if tables.runs is not None:
        lines += ["", *tx.bullets(claim_verdicts(tables.runs, spec))]
    return lines


def _event_comparisons(ctx: Context, study: str) -> pd.DataFrame | None:
    path = Path(ctx.tables_dir) / f"{study}_event_comparisons.csv"
    if not path.exists():
        return None
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


SECTIONS = (Section("mechanism", "Mechanism study", body),)

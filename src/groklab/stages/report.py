"""DVC stage `report`: figures and reports/report.md from the evaluated tables.

Reads params.yaml, reports/tables/<study>_{runs,cells}.csv (study: train, augmentation),
models/<study>/<cell>/history.csv and the published augmentation runs; writes
reports/figures/*.png and reports/report.md. A study without tables is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from groklab.config import RunConfig
from groklab.params import PAPER_DEFAULTS, load_params, run_config
from groklab.report import figures as fg
from groklab.report import markdown as md

DPI = 120

INTRO = (
    "This pipeline reproduces *grokking* — validation accuracy jumping to near 100% long "
    "after the training split is fit — on small algorithmic tasks (modular addition, "
    "subtraction and division, composition in S5), and re-runs the augmentation paper's "
    "grid (operand reversal, negation and their combinations). Every cell is trained for "
    "all seeds; each seed draws its own split, initialisation and batches. Per seed we "
    "record the updates until validation accuracy first reaches 99%, final accuracies, an "
    "erf fit `a·erf(s·(t − τ)) + b` of the training and validation curves, and, under "
    "augmentation, how many validation pairs an augmented training example can equal."
)


@dataclass
class StudyTables:
    """What the report reads for one study; ``notes`` say what was missing."""

    cells: pd.DataFrame
    runs: pd.DataFrame | None
    histories: pd.DataFrame | None
    notes: list[str] = field(default_factory=list)


def _ordered(df: pd.DataFrame, order: dict[str, list[Any]]) -> pd.DataFrame:
    """Rows sorted by the position of their values in ``order`` (params order; unknown last)."""
    keys = [k for k in order if k in df]
    ranks = {f"_rank_{k}": df[k].map({v: i for i, v in enumerate(order[k])})
             .fillna(len(order[k])) for k in keys}
    return (df.assign(**ranks).sort_values(list(ranks), kind="stable")
            .drop(columns=list(ranks)).reset_index(drop=True))


def load_study(study: str, tables_dir: Path, models_dir: Path,
               order: dict[str, list[Any]]) -> StudyTables | None:
    """The study's cell and seed tables and histories; None when its cell table is missing."""
    cells_path = Path(tables_dir) / f"{study}_cells.csv"
    if not cells_path.exists():
        return None
    cells = _ordered(pd.read_csv(cells_path), order)
    notes = []
    runs_path = Path(tables_dir) / f"{study}_runs.csv"
    runs = _ordered(pd.read_csv(runs_path), order) if runs_path.exists() else None
    if runs is None:
        notes.append(f"`{runs_path}` is missing: no erf fits are drawn.")
    keys = [k for k in ("task", "aug") if k in cells]
    frames, missing = [], []
    for _, cell in cells.iterrows():
        path = Path(models_dir) / study / str(cell["cell"]) / "history.csv"
        if path.exists():
            frames.append(pd.read_csv(path).assign(**{k: cell[k] for k in keys}))
        else:
            missing.append(str(cell["cell"]))
    if missing:
        notes.append(f"No history under `{Path(models_dir) / study}` for: "
                     f"{', '.join(missing)}; the curves leave them out.")
    histories = pd.concat(frames, ignore_index=True) if frames else None
    return StudyTables(cells, runs, histories, notes)


def describe_config(cfg: RunConfig, seeds: list[int]) -> str:
    """One line with the settings that define a run: data, model, optimiser, budget, seeds."""
    d, m, o, t = cfg.data, cfg.model, cfg.optim, cfg.train
    model = {"transformer": f"{m.layers} layers, width {m.width}, {m.heads} heads",
             "mlp": f"{m.mlp_layers} hidden layers of {m.mlp_hidden}",
             "lstm": f"hidden size {m.lstm_hidden}"}.get(m.arch, m.arch)
    model += f", dropout {m.dropout:g}" if m.dropout else ""
    opt = f"{o.kind}, lr {o.lr:g}, " + (
        f"momentum {o.momentum:g}{' (Nesterov)' if o.nesterov else ''}" if o.kind == "sgd"
        else f"betas ({o.betas[0]:g}, {o.betas[1]:g})")
    opt += f", weight decay {o.weight_decay:g}, {o.warmup}-update linear warm-up"
    batch = ("full batch" if t.batch_size is None
             else f"batch {t.batch_size} sampled with replacement")
    return (f"p = {d.p}, training fraction {d.train_fraction:g} ({d.encoding} encoding); "
            f"{m.arch} ({model}); {opt}; {batch}; {t.steps} updates, validation every "
            f"{t.eval_every}; seeds {', '.join(map(str, seeds))}.")


def _budget(study: StudyTables, params: dict[str, Any]) -> int:
    if study.runs is not None and "budget" in study.runs:
        return int(study.runs["budget"].max())
    return int(params["train"]["steps"])


def _figure(name: str, alt: str, link: str) -> str:
    return f"![{alt}]({link}/{name}.png)"


def _skipped(study: str, tables_dir: Path) -> str:
    return (f"_Skipped: `{Path(tables_dir) / f'{study}_cells.csv'}` does not exist "
            f"(run the `{study}` stages and `evaluate` first)._")


def experiment_section(params: dict[str, Any], study: StudyTables | None, tables_dir: Path,
                       figures: dict[str, Figure], link: str) -> str:
    knobs = {k: params.get(k, v) for k, v in PAPER_DEFAULTS.items()}
    lines = ["## Experiment", "",
             "The `train` stage trains every task in `tasks` with the current knobs: "
             + ", ".join(f"{k} = `{v}`" for k, v in knobs.items()) + "."]
    if knobs != PAPER_DEFAULTS:
        cfg = run_config(params, params["tasks"][0], **knobs)
        lines += ["", f"Resolved settings: {describe_config(cfg, params['seeds'])}"]
    if study is None:
        return "\n".join([*lines, "", _skipped("train", tables_dir)])
    cells, budget = study.cells, _budget(study, params)
    n_all = int((cells["n_censored"] == 0).sum())
    lines += [
        "", md.experiment_table(cells), "",
        f"{n_all} of {len(cells)} tasks reached 99% validation accuracy in every seed. "
        "Steps to 99%: mean ± half-width of the 95% interval over seeds; seeds that never "
        f"reached 99% are counted at the budget ({budget} updates) and the cell shows "
        "`≥ mean (k/n grokked)`, a lower bound. Relative gap τ_val/τ_train − 1 and relative "
        "sharpness s_val/s_train come from the erf fits of seeds where both fits succeeded "
        "(`fits ok`).",
    ]
    if study.runs is not None:
        lines += ["", f"Fit failures: {md.fit_failures(study.runs)}"]
    lines += [f"\n_{note}_" for note in study.notes]
    if study.histories is not None:
        figures["train_curves"] = fg.accuracy_curves(
            study.histories, study.runs, hue=None, col="task",
            title="Experiment: accuracy vs updates (" + ", ".join(map(str, knobs.values())) + ")")
        lines += ["", _figure("train_curves", "Experiment accuracy curves", link)]
    return "\n".join(lines)


def augmentation_section(params: dict[str, Any], study: StudyTables | None, tables_dir: Path,
                         reference: dict[str, Any] | None, figures: dict[str, Figure],
                         link: str) -> str:
    lines = ["## Augmentation study", "",
             "Every task of `studies.augmentation.tasks` trained with every augmentation of "
             "`studies.augmentation.augs`; every other factor is the paper default "
             "(curriculum none, transformer, adamw)."]
    if study is None:
        return "\n".join([*lines, "", _skipped("augmentation", tables_dir)])
    cells, budget = study.cells, _budget(study, params)
    published = md.published_steps(reference) if reference else None
    figures["augmentation_steps_to_99"] = fg.steps_to_99(cells, budget=budget)
    figures["augmentation_final_accuracy"] = fg.final_accuracy(cells)
    figures["augmentation_leakage"] = fg.leakage(cells)
    lines += ["", "### Steps to 99% validation accuracy", "", md.steps_pivot(cells), "",
              md.censoring_note(cells, budget=budget), "",
              _figure("augmentation_steps_to_99", "Steps to 99% per task and augmentation", link)]
    if study.histories is not None:
        figures["augmentation_curves"] = fg.accuracy_curves(
            study.histories, study.runs, hue="aug", col="task",
            title="Augmentation study: accuracy vs updates")
        lines += ["", _figure("augmentation_curves", "Accuracy curves per augmentation", link)]
    lines += [f"\n_{note}_" for note in study.notes]

    lines += ["", "### Comparison with the published numbers", ""]
    if reference is None:
        lines.append("_The published runs file was not found; no comparison._")
    else:
        lines += [
            f"Published runs: {reference.get('source', 'reference runs')}. They list "
            "`step_val_acc_99` only for seeds that reached 99% — seeds that did not were "
            "dropped — so their means are over the listed seeds only, while ours count such "
            f"seeds at the budget. The reference ran {md.REFERENCE_BUDGET} updates; ours ran "
            f"{budget}.", "",
            "Paper Table 1 is the table printed in the paper. " + md.table1_check(published),
            "",
            md.comparison_table(cells, published), "",
            "Notes on the reference runs:", "",
            *[f"- {note}" for note in reference.get("notes", [])],
        ]

    lines += ["", "### Final accuracy and leakage", "", md.leakage_table(cells), "",
              _figure("augmentation_final_accuracy", "Final train and validation accuracy", link),
              "", _figure("augmentation_leakage", "Validation accuracy vs reachable pairs", link),
              "", "### Reading", "", md.reading(cells, published, budget=budget), "",
              md.leakage_reading(cells)]
    if published is not None:
        lines += ["", md.published_dropped(published)]
    return "\n".join(lines)


def build_report(params: dict[str, Any], tables_dir: Path | str, models_dir: Path | str,
                 references_path: Path | str, *, figures_link: str = "figures"
                 ) -> tuple[str, dict[str, Figure]]:
    """The report's markdown and its figures (by file stem); reads inputs, writes nothing.

    ``figures_link`` is the figures folder relative to the report, used in image links.
    """
    tables_dir, models_dir = Path(tables_dir), Path(models_dir)
    aug_spec = (params.get("studies") or {}).get("augmentation") or {}
    ref_path = Path(references_path)
    reference = json.loads(ref_path.read_text()) if ref_path.exists() else None
    train = load_study("train", tables_dir, models_dir, {"task": list(params["tasks"])})
    aug = load_study("augmentation", tables_dir, models_dir,
                     {"task": list(aug_spec.get("tasks", [])), "aug": list(aug_spec.get("augs",
                                                                                        []))})
    figures: dict[str, Figure] = {}
    shared = run_config(params, params["tasks"][0], **PAPER_DEFAULTS)
    parts = [
        "# Grokking report", INTRO,
        f"**Configuration** (shared settings): {describe_config(shared, params['seeds'])}",
        experiment_section(params, train, tables_dir, figures, figures_link),
        augmentation_section(params, aug, tables_dir, reference, figures, figures_link),
    ]
    return "\n\n".join(parts) + "\n", figures


def write_report(text: str, figures: dict[str, Figure], out_figures: Path,
                 out_report: Path) -> list[Path]:
    """Write the figures (PNG) and the markdown; returns every path written."""
    Path(out_figures).mkdir(parents=True, exist_ok=True)
    Path(out_report).parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, figure in figures.items():
        path = Path(out_figures) / f"{name}.png"
        figure.savefig(path, dpi=DPI)
        paths.append(path)
    Path(out_report).write_text(text, encoding="utf-8")
    return [*paths, Path(out_report)]


def main(argv: list[str] | None = None) -> list[Path]:
    """Build and write the report; returns the written paths (for artifact logging)."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters")
    parser.add_argument("--tables", type=Path, default=Path("reports/tables"),
                        help="folder of <study>_runs.csv and <study>_cells.csv")
    parser.add_argument("--models", type=Path, default=Path("models"),
                        help="folder of <study>/<cell>/history.csv")
    parser.add_argument("--references", type=Path,
                        default=Path("references/augmentation_paper_runs.json"),
                        help="published augmentation runs (JSON)")
    parser.add_argument("--out-figures", type=Path, default=Path("reports/figures"))
    parser.add_argument("--out-report", type=Path, default=Path("reports/report.md"))
    args = parser.parse_args(argv)
    link = Path(os.path.relpath(args.out_figures, args.out_report.parent)).as_posix()
    text, figures = build_report(load_params(args.params), args.tables, args.models,
                                 args.references, figures_link=link)
    paths = write_report(text, figures, args.out_figures, args.out_report)
    print(f"report: wrote {args.out_report} and {len(figures)} figures in {args.out_figures}")
    return paths


def main_tracked(argv: list[str] | None = None) -> None:
    """:func:`main`, then the report and figures as artifacts of an MLflow run."""
    # Imported here: it pulls in MLflow, which the functions above do not need.
    from groklab.stages.common import tracker_for

    paths = main(argv)
    with tracker_for("report", "report") as tracker:
        tracker.log_artifacts([p for p in paths if p.suffix == ".md"])
        tracker.log_artifacts([p for p in paths if p.suffix == ".png"], artifact_path="figures")


if __name__ == "__main__":
    from groklab.stages.common import fail_cleanly

    fail_cleanly(main_tracked)

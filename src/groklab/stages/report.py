"""DVC stage `report`: figures and reports/report.md from the evaluated tables.

Reads params.yaml, reports/tables/<family>_{runs,cells,comparisons}.csv (the experiment and
every study), each row's models/<family>/<cell>/history.csv and the papers' numbers
(references/*.json); writes reports/figures/<study>_<what>.png and reports/report.md. The
sections are those of :data:`groklab.report.sections.SECTIONS`, in params.yaml's order; a
study without tables is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from groklab.cells import EXPERIMENT, studies
from groklab.errors import OneLineParser
from groklab.params import load_params, run_config
from groklab.report.context import Context, StudyTables, describe_config
from groklab.report.sections import render_sections
from groklab.report.study import distinct

DPI = 120

INTRO = (
    "This pipeline reproduces *grokking* — validation accuracy jumping to near 100% long "
    "after the training split is fit — on small algorithmic tasks (modular addition, "
    "subtraction and division, composition in S5), and re-runs the augmentation paper's "
    "grid (operand reversal, negation and their combinations). Every cell is trained for "
    "all seeds; each seed draws its own split, initialisation and batches. Per seed we "
    "record the updates until validation accuracy first reaches 99%, final accuracies, an "
    "erf fit `a·erf(s·(t − τ)) + b` of the training and validation curves, and, under "
    "augmentation, how many validation pairs an augmented training example can equal. The "
    "training curve is accuracy on the un-augmented training split (a fixed sample of it), "
    "the same quantity in every cell. A seed *groks* when its validation accuracy reaches "
    "99% at least `analysis.grok_delay` updates after its training curve did; a cell is "
    "called faster or slower than its study's default only on a test of steps to 99% that "
    "keeps censored seeds (the log-rank test where it can reach p < 0.05 with the seeds "
    "there are, else the interval of a log-normal time ratio), per task and across the "
    "study's tasks; every comparison names the test that decided it."
)
STUDIES_INTRO = (
    "Then the studies, one section each, in params.yaml's order ({studies}), and the "
    "sharpness of grokking, as the sharpness paper measures it, across every modular-arithmetic "
    "run. Each study states what the papers it reproduces say (augmentation: the augmentation "
    "paper; curriculum: the curriculum paper; architecture, optimizer, data fraction, batch "
    "size, multivariate: the course project and the Exploring Grokking paper; concealment, "
    "linear teacher: the sharpness paper) and whether our runs agree. A study whose "
    "tables are missing is skipped with a note."
)

__all__ = ["StudyTables", "build_report", "describe_config", "load_study", "main",
           "write_report"]


def _ordered(df: pd.DataFrame, order: dict[str, list[Any]]) -> pd.DataFrame:
    """Rows sorted by the position of their values in ``order`` (params order; unknown last)."""
    keys = [k for k in order if k in df]
    ranks = {f"_rank_{k}": df[k].map({v: i for i, v in enumerate(order[k])})
             .fillna(len(order[k])) for k in keys}
    return (df.assign(**ranks).sort_values(list(ranks), kind="stable")
            .drop(columns=list(ranks)).reset_index(drop=True))


def load_study(study: str, tables_dir: Path, models_dir: Path,
               order: dict[str, list[Any]]) -> StudyTables | None:
    """The study's cell and seed tables and histories; None when its cell table is missing.

    ``order`` maps columns to their values in params order; its keys also name the cell
    columns copied onto each history row (e.g. ``task`` and the study's factor). A row's
    history is read from its source folder (the ``path`` column: a base run for a study's
    default value).
    """
    path = {t: Path(tables_dir) / f"{study}_{t}.csv"
            for t in ("cells", "runs", "comparisons", "across_tasks")}
    if not path["cells"].exists():
        return None
    cells = _ordered(pd.read_csv(path["cells"]), order)
    runs = _ordered(pd.read_csv(path["runs"]), order) if path["runs"].exists() else None
    versus, across = ((pd.read_csv(path[t], keep_default_na=False, na_values=[""])
                       if path[t].exists() else None) for t in ("comparisons", "across_tasks"))
    notes = [] if runs is not None else [f"`{path['runs']}` is missing: no erf fits are drawn."]
    keys = [k for k in order if k in cells]
    frames, missing = [], []
    for _, cell in cells.iterrows():
        history = Path(models_dir) / str(cell["path"]) / "history.csv"
        if history.exists():
            frames.append(pd.read_csv(history).assign(**{k: cell[k] for k in keys}))
        else:
            missing.append(str(cell["cell"]))
    if missing:
        notes.append(f"No history under `{models_dir}` for: {', '.join(missing)}; the curves "
                     "leave them out.")
    histories = pd.concat(frames, ignore_index=True) if frames else None
    return StudyTables(cells, runs, histories, versus, notes, across)


def load_all(params: dict[str, Any], tables_dir: Path, models_dir: Path
             ) -> dict[str, StudyTables | None]:
    """Every study's tables (None where missing), the experiment's under ``experiment``."""
    out: dict[str, StudyTables | None] = {
        EXPERIMENT: load_study(EXPERIMENT, tables_dir, models_dir,
                               {"task": list(params["tasks"])})}
    for name, study in studies(params).items():
        factor = study.factor.split(".")[-1]
        values = [cell.value for cell, _ in study.rows(params)]
        order = {"task": list(study.tasks), factor: sorted(set(values), key=values.index)}
        out[name] = load_study(name, tables_dir, models_dir, order)
    return out


def read_references(folder: Path) -> dict[str, dict[str, Any]]:
    """Every ``*.json`` under ``folder`` by file stem (the papers' numbers and claims)."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))}


def overview(ctx: Context) -> str:
    """How many table rows and distinct runs the report reads."""
    frames = [t.runs for t in ctx.studies.values() if t is not None and t.runs is not None]
    if not frames:
        return "_No per-run table exists yet._"
    runs = pd.concat(frames, ignore_index=True)
    return (f"**Runs:** the tables below hold {len(runs)} rows (seed × cell) from "
            f"{distinct(runs)} distinct runs (configuration and seed, `run_key`): a base run "
            "stands in for the default value of every study that varies one of its settings, "
            "and is counted once wherever runs are pooled.")


PAPERS_SEEDS = 3  # seeds per cell in every reproduced paper


def scale_banner(ctx: Context) -> str | None:
    """What scale the runs are at, when it is smaller than the papers': seeds, the stop rule
    and the budget, and what follows for the verdicts. None at the papers' scale."""
    params, seeds = ctx.params, list(ctx.params["seeds"])
    stop = params["train"].get("stop_after_grok")
    if len(seeds) >= PAPERS_SEEDS and stop is None:
        return None
    frames = [t.runs for t in ctx.studies.values() if t is not None and t.runs is not None]
    runs = pd.concat(frames, ignore_index=True) if frames else None
    parts = [f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} per cell (the papers ran "
             f"{PAPERS_SEEDS}): no interval is computed from one seed, no count over fewer than "
             f"{PAPERS_SEEDS} seeds agrees or disagrees with a paper, and no comparison can be "
             "significant from one seed per cell"]
    if stop is not None:
        done = ""
        if runs is not None and {"steps_done", "budget"} <= set(runs.columns):
            early = runs[runs["steps_done"] < runs["budget"]]
            lo, hi = (int(early["steps_done"].agg(f)) for f in ("min", "max")) \
                if len(early) else (0, 0)
            done = (f"; {len(early)} of {len(runs)} runs stopped early, after "
                    + (f"{lo}" if lo == hi else f"{lo} to {hi}") + " updates"
                    if len(early) else "")
        parts.append(f"runs stop {int(stop)} updates after validation accuracy reaches 99% "
                     f"(`train.stop_after_grok`){done}: what follows the stop is not seen (a dip "
                     "or collapse after it would be missed), and final accuracies are at the "
                     "stop")
    table1 = ctx.reference("augmentation_paper_table1") or {}
    budget = int(params["train"]["steps"])
    if table1.get("budget") and int(table1["budget"]) != budget:
        parts.append(f"a budget of {budget} updates per run (the augmentation paper's runs: "
                     f"{int(table1['budget'])})")
    return ("> **Scale: a first look, not the papers' design.** " + "; ".join(parts)
            + ". Read the verdicts below with that in mind: where the runs cannot support one, "
            "the report says \"cannot tell\" or marks a description \"(not tested)\".")


def build_report(params: dict[str, Any], tables_dir: Path | str, models_dir: Path | str,
                 references: Path | str, *, figures_link: str = "figures"
                 ) -> tuple[str, dict[str, Figure]]:
    """The report's markdown and its figures (by file stem); reads inputs, writes nothing.

    ``references``: the folder of the papers' numbers (``references/*.json``);
    ``figures_link`` is the figures folder relative to the report, used in image links.
    """
    tables_dir, models_dir = Path(tables_dir), Path(models_dir)
    ctx = Context(params=params, studies=load_all(params, tables_dir, models_dir),
                  references=read_references(Path(references)), tables_dir=tables_dir,
                  link=figures_link, models_dir=models_dir)
    shared = run_config(params, params["baseline"]["tasks"][0])
    banner = scale_banner(ctx)
    parts = [
        "# Grokking report", *([banner] if banner else []), INTRO,
        STUDIES_INTRO.format(studies=", ".join(f"`{name}`" for name in params["studies"])),
        f"**Configuration** (shared settings): {describe_config(shared, params['seeds'])}",
        overview(ctx), *render_sections(ctx),
    ]
    return "\n\n".join(parts) + "\n", ctx.figures


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
    parser = OneLineParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters")
    parser.add_argument("--tables", type=Path, default=Path("reports/tables"),
                        help="folder of <study>_runs.csv and <study>_cells.csv")
    parser.add_argument("--models", type=Path, default=Path("models"),
                        help="folder of <study>/<cell>/history.csv")
    parser.add_argument("--references", type=Path, default=Path("references"),
                        help="folder of the papers' numbers and claims (*.json)")
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

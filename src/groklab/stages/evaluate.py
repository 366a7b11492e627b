"""DVC stage `evaluate`: per-seed and per-cell statistics of every family of runs.

For the base runs, the experiment and each study it reads every row's source cell
(models/<family>/<name>/: history.csv, final.csv, config.json) — the experiment at paper
defaults and each study's default value read a base run — and writes:

- reports/tables/<family>_runs.csv: one row per (cell, seed): crossings, erf fits, finals;
- reports/tables/<family>_cells.csv: one row per cell: means, intervals, fractions;
- reports/tables/<study>_comparisons.csv: each cell against the study's default-value cell
  of its task on steps to 99% (log-rank test, time ratio, difference in medians;
  groklab.summary);
- reports/tables/<study>_across_tasks.csv: each value against the default across the
  study's tasks (log-rank stratified by task, time ratio with one intercept per task);
- reports/metrics/<family>/<cell>.json: the cell's headline numbers (groklab.summary.HEADLINE),
  one file per cell so that `dvc metrics show` prints one row per cell;
- reports/curves/<family>/<cell>.csv: mean curves over seeds, for `dvc plots`.

Every row carries ``source`` (the stage that trained it), ``path`` (its folder) and
``run_key`` (its configuration and seed), so analyses that pool rows count a run once.
What counts as grokking, collapsing and an acceptable erf fit is params.yaml's `analysis`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from groklab.cells import (
    BASELINE,
    EXPERIMENT,
    Cell,
    CellConfig,
    baseline_cells,
    config_key,
    experiment_cells,
    studies,
)
from groklab.config import LinearTeacherConfig, RunConfig, chance_accuracy
from groklab.errors import OneLineParser
from groklab.mechanism import MECHANISM_COLUMNS, Thresholds, seed_events
from groklab.metrics import Analysis
from groklab.params import PARAMS_FILE, load_params
from groklab.stages.common import fail_cleanly, tracker_for
from groklab.stages.outputs import atomic_dir, write_json
from groklab.summary import (
    cell_summary,
    compare_cells,
    compare_study,
    headline,
    seed_summaries_from,
)

CURVE_COLUMNS = ("train_acc", "val_acc", "clean_val_acc", "batch_acc")


def family_rows(params: dict[str, Any], family: str) -> tuple[str | None, list[tuple[Cell, Cell]]]:
    """The factor column of ``family`` (None for base runs and the experiment) and its
    ``(cell, source)`` rows."""
    if family == BASELINE:
        return None, [(c, c) for c in baseline_cells(params)]
    if family == EXPERIMENT:
        return None, [(c, c) for c in experiment_cells(params)]
    study = studies(params)[family]
    return study.factor.split(".")[-1], study.rows(params)


def resolve(models: Path, source: Cell) -> tuple[str, Path]:
    """The stage that trained ``source``'s outputs and their folder: the experiment at the
    paper defaults points (source.json) to its base run."""
    path = source.path(models)
    pointer = path / "source.json"
    if pointer.exists():
        target = json.loads(pointer.read_text())
        return target["stage"], models / target["family"] / target["name"]
    return source.stage, path


def source_dir(models: Path, source: Cell) -> Path:
    """The folder holding ``source``'s outputs (following the experiment's source.json)."""
    return resolve(models, source)[1]


def load_config(path: Path) -> tuple[CellConfig, list[int]]:
    meta = json.loads((path / "config.json").read_text())
    if meta.get("kind") == "linear_teacher":
        return LinearTeacherConfig(**meta["config"]), meta["seeds"]
    return RunConfig.from_dict(meta["config"]), meta["seeds"]


def read_cell(models: Path, source: Cell, analysis: Analysis,
              thresholds: Thresholds | None = None
              ) -> tuple[Path, CellConfig, pd.DataFrame, pd.DataFrame]:
    """The source folder, configuration, history and per-seed summary rows of one cell;
    with its mechanism events (groklab.mechanism) when it has measures.csv."""
    path = source_dir(models, source)
    if not (path / "history.csv").exists():
        raise FileNotFoundError(f"{path}/history.csv is missing; run `dvc repro "
                                f"{source.stage}` first")
    config, seeds = load_config(path)
    history = pd.read_csv(path / "history.csv")
    final = pd.read_csv(path / "final.csv")
    if isinstance(config, LinearTeacherConfig):
        from groklab.linear_teacher import summarize_curve

        rows = []
        for seed, h in history.groupby("seed", sort=False):
            fin = final.set_index("seed").loc[seed]
            rows.append({"seed": int(seed), "budget": config.steps,
                         **summarize_curve(h.sort_values("step"), config.steps, analysis),
                         **{k: fin[k] for k in fin.index if k.startswith("final_")},
                         "n_train": int(fin["n_train"])})
        rows = pd.DataFrame(rows)
    else:
        rows = pd.DataFrame(seed_summaries_from(history, final, budget=config.train.steps,
                                                chance=chance_accuracy(config.data),
                                                analysis=analysis))
        if (path / "measures.csv").exists():
            found = seed_events(pd.read_csv(path / "measures.csv"), history,
                                config.train.steps, thresholds or Thresholds())
            for col in MECHANISM_COLUMNS:
                rows[col] = [found[int(s)][col] for s in rows["seed"]]
    rows["run_key"] = [hashlib.sha1(config_key(config, [int(s)]).encode()).hexdigest()[:12]
                       for s in rows["seed"]]
    return path, config, history, rows


def evaluate_family(params: dict[str, Any], family: str, models: Path,
                    keep: Callable[[Cell], bool] | None = None
                    ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame]]:
    """The family's per-seed and per-cell tables and its mean curves (by cell name); with
    ``keep``, only its rows whose source cell ``keep`` accepts (the stage reads them all)."""
    factor, pairs = family_rows(params, family)
    pairs = [(cell, source) for cell, source in pairs if keep is None or keep(source)]
    analysis = Analysis.from_params(params)
    thresholds = Thresholds.from_params(params)
    runs, cells, curves = [], [], {}
    for cell, source in pairs:
        path, _, history, rows = read_cell(models, source, analysis, thresholds)
        keys = {"study": family, "cell": cell.name, "task": cell.task,
                **({factor: cell.value} if factor else {}),
                "source": resolve(models, source)[0], "path": path.relative_to(models).as_posix()}
        for i, (key, value) in enumerate(keys.items()):
            rows.insert(i, key, value)
        runs.append(rows)
        cells.append({**keys, **cell_summary(rows)})
        cols = [c for c in CURVE_COLUMNS if c in history]
        curves[cell.name] = history.groupby("step")[cols].mean().reset_index()
    return pd.concat(runs, ignore_index=True), pd.DataFrame(cells), curves


def comparisons(params: dict[str, Any], family: str, runs: pd.DataFrame
                ) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Each cell of a study against its default-value cell of the same task, and each value
    against the default across the study's tasks (None for the base runs and the
    experiment); empty when the study has no cell at its default value."""
    factor, _ = family_rows(params, family)
    if factor is None:
        return None
    default = studies(params)[family].default_value(params)
    runs = runs.rename(columns={factor: "value"})
    return compare_cells(runs, "value", default), compare_study(runs, "value", default)


def event_comparisons(params: dict[str, Any], family: str, runs: pd.DataFrame
                      ) -> pd.DataFrame | None:
    """Each measured cell of a study against its default-value cell on the mechanism
    events' times (column ``event``); None when the study has no measured cell."""
    factor, _ = family_rows(params, family)
    if factor is None or "circuit_step" not in runs or runs["circuit_step"].isna().all():
        return None
    default = studies(params)[family].default_value(params)
    keyed = runs.rename(columns={factor: "value"})
    tables = [compare_cells(keyed, "value", default, metric=f"{event}_step",
                            event=f"{event}_reached").assign(event=event)
              for event in ("circuit", "cleanup")]
    return pd.concat(tables, ignore_index=True)


def families(params: dict[str, Any]) -> list[str]:
    """Every family of runs, in report order."""
    return [BASELINE, EXPERIMENT, *studies(params)]


def evaluate_all(params: dict[str, Any], models: Path, reports: Path) -> list[Path]:
    """Write every family's tables, headline metrics and curves; returns the tables."""
    results = {family: evaluate_family(params, family, models) for family in families(params)}
    written = []
    for sub in ("tables", "metrics"):
        (reports / sub).mkdir(parents=True, exist_ok=True)
    with atomic_dir(reports / "curves") as curves_dir:
        for family, (runs, cells, curves) in results.items():
            runs.to_csv(reports / "tables" / f"{family}_runs.csv", index=False)
            cells.to_csv(reports / "tables" / f"{family}_cells.csv", index=False)
            versus = comparisons(params, family, runs)
            if versus is not None:
                for name, table in zip(("comparisons", "across_tasks"), versus, strict=True):
                    table.to_csv(reports / "tables" / f"{family}_{name}.csv", index=False)
                    written.append(reports / "tables" / f"{family}_{name}.csv")
            events = event_comparisons(params, family, runs)
            if events is not None:
                events.to_csv(reports / "tables" / f"{family}_event_comparisons.csv",
                              index=False)
                written.append(reports / "tables" / f"{family}_event_comparisons.csv")
            (reports / "metrics" / family).mkdir(exist_ok=True)
            for _, cell in cells.iterrows():
                write_json(reports / "metrics" / family / f"{cell['cell']}.json", headline(cell))
            (curves_dir / family).mkdir()
            for name, curve in curves.items():
                curve.to_csv(curves_dir / family / f"{name}.csv", index=False)
            written += [reports / "tables" / f"{family}_{k}.csv" for k in ("runs", "cells")]
            print(f"evaluate: {family}: {len(cells)} cells, {len(runs)} runs")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=PARAMS_FILE, help="parameters file")
    parser.add_argument("--models", type=Path, default=Path("models"), help="trained cells")
    parser.add_argument("--reports", type=Path, default=Path("reports"), help="output root")
    args = parser.parse_args(argv)
    written = evaluate_all(load_params(args.params), args.models, args.reports)
    with tracker_for("report", "evaluate") as tracker:
        tracker.log_artifacts(written, artifact_path="tables")


if __name__ == "__main__":
    fail_cleanly(main)

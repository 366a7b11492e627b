"""DVC stage `evaluate`: per-seed and per-cell metrics of the experiment and the studies.

Reads models/<study>/<cell>/{history,final}.csv for the cells params.yaml names and writes
reports/tables/<study>_{runs,cells}.csv, reports/metrics/<study>.json (for `dvc metrics`)
and reports/curves/<study>/<cell>.csv (mean accuracy curves, for `dvc plots`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from groklab.config import RunConfig
from groklab.linear_teacher import STUDY as LINEAR_TEACHER
from groklab.linear_teacher import cell_name as cell_name_lam
from groklab.linear_teacher import summarize_sweep
from groklab.params import STUDIES, cell_name, load_params
from groklab.stages.common import fail_cleanly, tracker_for
from groklab.stages.outputs import atomic_dir, write_json
from groklab.summary import cell_summary, metrics_tree, seed_summaries_from
from groklab.tasks import chance_accuracy

# Scalars of each λ that go to reports/metrics/linear_teacher.json.
LINEAR_TEACHER_KEYS = ("relative_gap_mean", "relative_sharpness_mean", "absolute_sharpness_mean",
                       "val_mid_step_mean", "train_mid_step_mean", "n_fit_ok", "frac_grokked")


def study_cells(params: dict, study: str) -> list[dict[str, str]]:
    if study == "train":
        return [{"task": t} for t in params["tasks"]]
    return STUDIES[study].cells(params)


def read_cell(models: Path, study: str, cell: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-seed summary rows and the mean curves of one trained cell."""
    path = models / study / cell_name(cell)
    if not (path / "history.csv").exists():
        raise FileNotFoundError(f"{path}/history.csv is missing; run `dvc repro "
                                f"{study}@{cell_name(cell)}` first")
    history = pd.read_csv(path / "history.csv")
    final = pd.read_csv(path / "final.csv")
    cfg = RunConfig.from_dict(json.loads((path / "config.json").read_text())["config"])
    chance = chance_accuracy(cfg.data)
    rows = pd.DataFrame(seed_summaries_from(history, final, budget=cfg.train.steps,
                                            chance=chance))
    for i, (key, value) in enumerate({"study": study, "cell": cell_name(cell), **cell}.items()):
        rows.insert(i, key, value)
    curves = history.groupby("step")[["train_acc", "val_acc", "clean_val_acc"]].mean()
    return rows, curves.reset_index()


def evaluate_study(params: dict, study: str, models: Path
                   ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame]]:
    runs, cells, curves = [], [], {}
    for cell in study_cells(params, study):
        rows, curve = read_cell(models, study, cell)
        runs.append(rows)
        cells.append({"study": study, "cell": cell_name(cell), **cell, **cell_summary(rows)})
        curves[cell_name(cell)] = curve
    return pd.concat(runs, ignore_index=True), pd.DataFrame(cells), curves


def evaluate_linear_teacher(models: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Erf fits of the closed-form λ sweep (see :func:`groklab.linear_teacher.summarize_sweep`)."""
    path = models / LINEAR_TEACHER / "curves.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `dvc repro {LINEAR_TEACHER}` first")
    curves = pd.read_csv(path)
    runs, cells = summarize_sweep(curves)
    by_lam = {cell_name_lam(lam): c.drop(columns=["lam", "seed"]).groupby("step").mean()
              .reset_index() for lam, c in curves.groupby("lam")}
    return runs, cells, by_lam


def metrics_for(study: str, cells: pd.DataFrame, runs: pd.DataFrame) -> dict:
    if study == LINEAR_TEACHER:
        return {str(row["cell"]): {k: round(float(row[k]), 6) for k in LINEAR_TEACHER_KEYS
                                   if pd.notna(row.get(k))}
                for _, row in cells.iterrows()}
    keys = ["task"] if study == "train" else ["task", STUDIES[study].factor]
    return metrics_tree(cells, runs, keys)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="parameters file")
    parser.add_argument("--models", type=Path, default=Path("models"), help="trained cells")
    parser.add_argument("--reports", type=Path, default=Path("reports"), help="output root")
    parser.add_argument("--studies", nargs="*", default=["train", *STUDIES, LINEAR_TEACHER],
                        help="which to evaluate (default: the experiment and every study)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    results = {study: evaluate_linear_teacher(args.models) if study == LINEAR_TEACHER
               else evaluate_study(params, study, args.models) for study in args.studies}

    written = []
    for sub in ("tables", "metrics", "curves"):
        (args.reports / sub).mkdir(parents=True, exist_ok=True)
    for study, (runs, cells, curves) in results.items():
        runs.to_csv(args.reports / "tables" / f"{study}_runs.csv", index=False)
        cells.to_csv(args.reports / "tables" / f"{study}_cells.csv", index=False)
        write_json(args.reports / "metrics" / f"{study}.json", metrics_for(study, cells, runs))
        with atomic_dir(args.reports / "curves" / study) as tmp:
            for name, curve in curves.items():
                curve.to_csv(tmp / f"{name}.csv", index=False)
        written += [args.reports / "tables" / f"{study}_{k}.csv" for k in ("runs", "cells")]
        print(f"evaluate: {study}: {len(cells)} cells, {len(runs)} runs")
    with tracker_for("report", "evaluate", params={"studies": args.studies}) as tracker:
        tracker.log_artifacts(written, artifact_path="tables")


if __name__ == "__main__":
    fail_cleanly(main)

"""DVC stages `train@<task>` (the experiment) and `<study>@<cell>` (a study's cells).

    python -m groklab.stages.train train task=x_plus_y
    python -m groklab.stages.train augmentation task=x_plus_y aug=negation

Trains every seed of the cell as one batched model and writes models/<study>/<cell>/
(history.csv, final.csv, config.json, summary.json, one checkpoint per seed) only when
training succeeded; logs the run, a nested run per seed and the per-step curves to MLflow.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from groklab.cards import labels_digest
from groklab.config import ConfigError, RunConfig
from groklab.cpu import CpuShare
from groklab.params import cell_name, experiment_config, get_study, load_params
from groklab.progress import ProgressBar
from groklab.stages.common import fail_cleanly, tracker_for
from groklab.stages.outputs import save_run
from groklab.summary import cell_summary, seed_summaries
from groklab.tasks import build_task
from groklab.tracking import StageTracker
from groklab.train import TrainResult, train

SUMMARY_METRICS = ("steps_to_99", "grokked", "steps_to_99_train", "max_val_acc_rate",
                   "final_train_acc", "final_val_acc", "final_train_loss", "final_val_loss",
                   "val_reachable", "clean_val_acc", "relative_gap", "relative_sharpness",
                   "absolute_sharpness")


def parse_cell(assignments: list[str]) -> dict[str, str]:
    cell = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"cell value {item!r} must look like key=value, e.g. task=x_plus_y")
        cell[key] = value
    if "task" not in cell:
        raise ConfigError("the cell needs task=<name>")
    return cell


def cell_config(params: dict, study: str, cell: dict[str, str]) -> RunConfig:
    if study == "train":
        return experiment_config(params, cell["task"])
    return get_study(study).config(params, cell)


def check_card(cfg: RunConfig, data_dir: Path, seeds: list[int]) -> None:
    """Refuse to train on a task whose generated table differs from what the code builds.

    Cells whose data settings differ from the shared ones (a study's own p or operand
    count) build their own table and have no card to check against.
    """
    card_path = data_dir / cfg.data.task / "card.json"
    if not card_path.exists():
        return
    card = json.loads(card_path.read_text())
    table_keys = ("p", "encoding", "operands", "parity_bits", "concealed_bits",
                  "parity_examples")
    mine = {k: getattr(cfg.data, k) for k in table_keys}
    if {k: card["config"].get(k) for k in table_keys} != mine:
        return
    if card["digest"] != labels_digest(build_task(cfg.data, seeds)):
        raise ConfigError(
            f"{card_path} does not match the equations this code builds for {mine}; "
            f"run `dvc repro generate@{cfg.data.task}` first"
        )


def log_to_mlflow(tracker: StageTracker, result: TrainResult, out: Path,
                  summaries: list[dict], card: Path) -> None:
    """Cell metrics, files and the dataset card on the stage run; curves, metrics and the
    checkpoint on each seed's nested run."""
    for summary in summaries:
        seed = summary["seed"]
        with tracker.seed_run(seed, params={"seed": seed}) as run:
            run.log_history(result.history[result.history.seed == seed])
            run.log_metrics({k: float(summary[k]) for k in SUMMARY_METRICS})
            run.log_artifacts([out / f"seed{seed}.pt"])
    tracker.log_metrics(cell_summary(pd.DataFrame(summaries)))
    tracker.log_artifacts([out / "history.csv", out / "final.csv", out / "config.json",
                           out / "summary.json"])
    if card.exists():
        tracker.log_artifacts([card], artifact_path="data")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", help="`train` for the experiment, or a study name")
    parser.add_argument("cell", nargs="+", help="the cell as key=value pairs (task=..., aug=...)")
    parser.add_argument("--params", default="params.yaml", help="parameters file")
    parser.add_argument("--data", type=Path, default=Path("data"), help="generated tables")
    parser.add_argument("--models", type=Path, default=Path("models"), help="output root")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    cell = parse_cell(args.cell)
    cfg = cell_config(params, args.study, cell)
    seeds = [int(s) for s in params["seeds"]]
    check_card(cfg, args.data, seeds)
    name = cell_name(cell)
    stage = f"{args.study}@{name}"
    out = args.models / args.study / name
    variant = "-".join(v for k, v in cell.items() if k != "task") or None
    with tracker_for(args.study, stage, task=cell["task"], variant=variant,
                     params={**cfg.to_dict(), "seeds": seeds}) as tracker:
        with CpuShare() as cpu, ProgressBar(f"{stage} seeds {seeds}", cfg.train.steps,
                                            on_update=cpu.rebalance) as bar:
            result = train(cfg, seeds, progress=bar.update)
        summaries = seed_summaries(result)
        save_run(result, out, summary={"stage": stage, "seeds": summaries})
        log_to_mlflow(tracker, result, out, summaries, args.data / cfg.data.task / "card.json")
    grokked = sum(bool(s["grokked"]) for s in summaries)
    print(f"{stage}: {grokked}/{len(seeds)} seeds reached 99% validation accuracy; "
          f"steps to 99%: {[s['steps_to_99'] for s in summaries]}; written to {out}")


if __name__ == "__main__":
    fail_cleanly(main)

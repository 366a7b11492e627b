"""DVC stages that train: `baseline@<task>`, `experiment@<task>`, `<study>@<task>-<value>`.

    python -m groklab.stages.train baseline x_plus_y
    python -m groklab.stages.train augmentation x_plus_y negation
    python -m groklab.stages.train      # under DVC: the cell is DVC_STAGE's

dvc.yaml's commands carry no name from params.yaml (a shell would read it): the stage
takes its cell from the stage name DVC sets in DVC_STAGE.

Trains every seed of the cell (a network: one batched model; the linear student-teacher
model: its closed-form curves) and writes models/<family>/<name>/ only when that succeeded:
history.csv, final.csv, config.json, summary.json (per seed, and the machine it ran on) and,
for networks, the cell's dataset card (card.json); a network's checkpoints, one per seed,
go to checkpoints/<family>/<name>/. The first folder is committed to git, the second stays
in DVC's cache, so a clone without the cache has every result (docs: README, "Results").
Then logs the run to MLflow (after training, so start-up never waits for MLflow).
`experiment@<task>` trains only when its knobs differ from the paper defaults; otherwise
it writes `source.json` naming the base run it equals, which evaluation reads in its place
(and an empty checkpoints folder).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

import groklab._interrupts  # noqa: F401 - first: a Ctrl-C while importing is one line
from groklab.budget import check_run_memory
from groklab.cells import (
    EXPERIMENT,
    Cell,
    CellConfig,
    cell_config,
    experiment_source,
    parse_cell,
    stage_cell,
)
from groklab.config import ConfigError, RunConfig
from groklab.errors import Interrupted, OneLineParser
from groklab.machine import machine_record, machine_tags
from groklab.params import KNOBS, PARAMS_FILE, get_key, load_params
from groklab.stages.common import fail_cleanly, tracker_for
from groklab.stages.outputs import atomic_dir, check_writable, save_run, write_json
from groklab.tracking import check_tracking_env, record_interrupted

GROK = 0.99  # validation accuracy whose first crossing is reported on the console


def run(config: CellConfig, seeds: list[int], label: str) -> Any:
    """Train (or, for the linear model, compute) every seed of one cell."""
    if isinstance(config, RunConfig):
        from groklab.cpu import CpuShare
        from groklab.progress import ProgressBar
        from groklab.train import train

        with (CpuShare(config.train.device),
              ProgressBar(f"{label} seeds {seeds}", config.train.steps) as bar):
            return train(config, seeds, progress=bar.update)
    from groklab.linear_teacher import run_cell

    return run_cell(config, seeds)


def card_of(config: CellConfig, seeds: list[int]) -> dict[str, Any] | None:
    """The cell's own dataset card (its data, splits and leakage); None for the linear model."""
    if not isinstance(config, RunConfig):
        return None
    from groklab.cards import dataset_card

    aug = config.train.aug
    return dataset_card(config.data, seeds, {aug.name: aug} if aug.active else {})


def seed_rows(result: Any) -> list[dict[str, Any]]:
    """Per seed: first update at which validation accuracy reached 99% (None: never) and
    the final metrics. The full analysis (erf fits, delays, ...) is `evaluate`'s."""
    rows = []
    for seed, history in result.history.groupby("seed", sort=False):
        hit = history.step[history.val_acc >= GROK]
        final = result.final[result.final.seed == seed].iloc[0]
        rows.append({"seed": int(seed), "steps_to_99": int(hit.min()) if len(hit) else None,
                     **{k: _plain(v) for k, v in final.items() if k != "seed"}})
    return rows


def headline(result: Any, rows: list[dict[str, Any]], budget: int,
             min_delay: int) -> dict[str, float]:
    """The cell's headline numbers, as MLflow's runs table shows them: mean steps to 99%
    (censored seeds at the budget), the fraction of seeds that grokked (validation reached
    99% at least ``min_delay`` updates after training did), mean final validation accuracy
    and, when augmented, mean clean validation accuracy. `evaluate` gives the rest."""
    from groklab.metrics import grok_delay, steps_to_threshold

    groks = []
    for _, h in result.history.groupby("seed", sort=False):
        train, val = (steps_to_threshold(h.step, h[col], GROK, budget)
                      for col in ("train_acc", "val_acc"))
        groks.append(grok_delay(train, val, min_delay).groks)
    n = len(rows)
    out = {"steps_to_99_mean": sum(r["steps_to_99"] or budget for r in rows) / n,
           "frac_groks": sum(groks) / n,
           "final_val_acc_mean": sum(r["final_val_acc"] for r in rows) / n}
    clean = [r.get("final_clean_val_acc") for r in rows]
    if any(r.get("val_reachable") for r in rows) and all(c is not None and math.isfinite(c)
                                                          for c in clean):
        out["clean_val_acc_mean"] = sum(clean) / n
    return {k: round(v, 4) for k, v in out.items()}


def _plain(v: Any) -> Any:
    v = v.item() if hasattr(v, "item") else v
    return None if isinstance(v, float) and math.isnan(v) else v


def variant(cell: Cell, params: dict[str, Any]) -> str | None:
    """What distinguishes the cell within its family (for run names and tags)."""
    if cell.family == EXPERIMENT:  # the knobs that differ from the paper defaults
        return ", ".join(f"{knob}={params[knob]}" for knob, key in KNOBS.items()
                         if params[knob] != get_key(params, key)) or "paper defaults"
    return None if cell.value is None else str(cell.value)


def device_of(result: Any) -> Any:
    """The device a network trained on; None for the linear model (no torch)."""
    model = getattr(result, "model", None)
    return None if model is None else next(model.parameters()).device


def log_run(cell: Cell, config: CellConfig, result: Any, out: Path, rows: list[dict],
            params: dict[str, Any], machine: dict[str, Any], checkpoints: Path) -> None:
    """The stage's MLflow run: headline metrics, the dataset card, the seeds' table, the
    machine (tags ``machine.*``) and the files; a nested run per seed with its curves and
    checkpoint."""
    import pandas as pd

    budget = result.steps_done if not isinstance(config, RunConfig) else config.train.steps
    tracker = tracker_for(cell.family, cell.stage, task=cell.task, variant=variant(cell, params),
                          params={**_config_dict(config), "seeds": result.seeds})
    tracker.tags.update(machine_tags(machine))
    with tracker:
        tracker.log_metrics(headline(result, rows, budget, params["analysis"]["grok_delay"]))
        card = out / "card.json"
        if card.exists():
            tracker.log_dataset(json.loads(card.read_text()), card)
        tracker.log_table(pd.DataFrame(rows), "seeds")
        for row in rows:
            seed = row["seed"]
            with tracker.seed_run(seed, params={"seed": seed}) as seed_run:
                seed_run.log_history(result.history[result.history.seed == seed])
                measures = getattr(result, "measures", None)
                if measures is not None:  # step metrics measures/restricted_loss, ...
                    seed_run.log_history(measures[measures.seed == seed], prefix="measures/")
                seed_run.log_metrics({k: v for k, v in row.items()
                                      if isinstance(v, int | float) and k != "seed"})
                ckpt = checkpoints / f"seed{seed}.pt"
                if ckpt.exists():
                    seed_run.log_artifacts([ckpt])
        tracker.log_artifacts([out / f for f in ("history.csv", "final.csv", "config.json",
                                                 "summary.json", "measures.csv")
                               if (out / f).exists()])


def _config_dict(config: CellConfig) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(config)


def named_cell(params: dict[str, Any], family: str | None, task: str | None,
               value: str | None) -> Cell:
    """The cell the command line names, or, with no names, the DVC stage being run."""
    if family is None:
        stage = os.environ.get("DVC_STAGE")
        if not stage:
            raise ConfigError("name the cell (family, task and, for a study, value), or run "
                              "it as a stage of dvc.yaml (DVC sets DVC_STAGE)")
        return stage_cell(params, stage)
    if task is None:
        raise ConfigError(f"{family}: the task is missing (e.g. x_plus_y)")
    return parse_cell(params, family, task, value)


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family", nargs="?",
                        help="baseline, experiment, or a study name (default: DVC_STAGE's)")
    parser.add_argument("task", nargs="?", help="the task, e.g. x_plus_y")
    parser.add_argument("value", nargs="?", help="the study factor's value (studies only)")
    parser.add_argument("--params", default=PARAMS_FILE, help="parameters file")
    parser.add_argument("--models", type=Path, default=Path("models"),
                        help="output root of the results (committed to git)")
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"),
                        help="output root of the checkpoints (DVC's cache)")
    args = parser.parse_args(argv)

    check_tracking_env()  # a typo in GROKLAB_TRACKING fails now, not after training
    params = load_params(args.params)
    cell = named_cell(params, args.family, args.task, args.value)
    out, ckpts = cell.path(args.models), cell.path(args.checkpoints)
    seeds = list(params["seeds"])
    if cell.family == EXPERIMENT and (source := experiment_source(params, cell.task)):
        with atomic_dir(out) as tmp:
            write_json(tmp / "source.json", {"stage": source.stage, "family": source.family,
                                             "name": source.name})
        with atomic_dir(ckpts):  # the stage's cached output: here, nothing but its manifest
            pass
        print(f"{cell.stage}: the knobs are the paper defaults, so this is {source.stage}; "
              f"nothing trained, {out}/source.json points there")
        return
    config = cell_config(params, cell)
    check_run_memory(config, len(seeds), cell.stage)  # before anything is built
    network = isinstance(config, RunConfig)
    for path in (out, ckpts) if network else (out,):
        check_writable(path)  # before training: a bad path costs no compute
    try:
        result = run(config, seeds, cell.stage)
    except Interrupted as stop:  # a KILLED run that says where it stopped, then one line
        record_interrupted(cell.family, cell.stage, step=stop.step, task=cell.task,
                           variant=variant(cell, params), params=_config_dict(config))
        raise
    rows = seed_rows(result)
    machine = machine_record(device_of(result))
    save_run(result, out, summary={"stage": cell.stage, "seeds": rows, "machine": machine},
             card=card_of(config, seeds), checkpoints=ckpts if network else None)
    log_run(cell, config, result, out, rows, params, machine, ckpts)
    steps = [r["steps_to_99"] for r in rows]
    print(f"{cell.stage}: {sum(s is not None for s in steps)}/{len(seeds)} seeds reached "
          f"99% validation accuracy; steps to 99%: {steps} (None: not within "
          f"{result.steps_done} updates); written to {out}")


if __name__ == "__main__":
    fail_cleanly(main)

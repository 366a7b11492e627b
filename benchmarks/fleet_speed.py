"""Real default cells trained one by one, as their stages train them, and as one fleet.

    .venv/bin/python benchmarks/fleet_speed.py                        # CPU, 100 updates
    .venv/bin/python benchmarks/fleet_speed.py --steps 1000           # on a GPU machine
    .venv/bin/python benchmarks/fleet_speed.py --cells augmentation@x_plus_y-negation \\
        curriculum@x_plus_y-linear ...

The cells (default: the base cell and the four augmentations of x_plus_y: the papers'
model, data and optimiser, 3 seeds each) come from params.yaml with a shorter budget
(``--steps``; the work per update and per evaluation is the real cells'). Each is trained
alone as its stage would (`groklab.train.train`, engine ``auto``: CUDA graphs on a GPU, the
plain loop on a CPU), then all as one fleet (`groklab.fleet.train_fleet`), in this process,
on the device `auto` resolves to, at ``GROKLAB_THREADS`` threads (default: every core).
Start-up (imports, data, MLflow) is not timed: see benchmarks/repro_jobs.py for whole
stages. Run it on an otherwise idle machine. Prints one line per way of training and, last,
a JSON object with the figures: seconds, cells per hour, the fleet's forward-backward
passes per update (cells whose batches hold different prefixes take separate passes), and
how many cells the fleet trained byte for byte as alone (history, final metrics, weights:
all of them on a CPU; on a GPU the stage's CUDA-graph engine draws other random numbers).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from groklab.cells import cell_config, stage_cell
from groklab.cpu import thread_count
from groklab.fleet import train_fleet
from groklab.params import load_params
from groklab.train import TrainResult, resolve_device, train

ROOT = Path(__file__).resolve().parents[1]

CELLS = ["baseline@x_plus_y", "augmentation@x_plus_y-reversal",
         "augmentation@x_plus_y-negation", "augmentation@x_plus_y-combined15",
         "augmentation@x_plus_y-combined30"]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def identical(a: TrainResult, b: TrainResult | None) -> bool:
    """The same history, final metrics and weights, bit for bit."""
    if b is None or not (a.history.equals(b.history) and a.final.equals(b.final)):
        return False
    mine, theirs = a.model.state_dict(), b.model.state_dict()
    return list(mine) == list(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", nargs="+", default=CELLS, help="training stages")
    parser.add_argument("--steps", type=int, default=100, help="updates per cell")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml",
                        help="parameters file (default: the project's)")
    args = parser.parse_args()
    params = load_params(args.params)
    seeds = list(params["seeds"])
    configs = [cell_config(params, stage_cell(params, stage)).replace(
        train={"steps": args.steps}) for stage in args.cells]
    device = resolve_device(configs[0].train.device)
    torch.set_num_threads(thread_count())

    synchronize(device)
    t0 = time.perf_counter()
    lone = [train(config, seeds) for config in configs]
    synchronize(device)
    alone = time.perf_counter() - t0

    t0 = time.perf_counter()
    fleet = train_fleet(configs, seeds)
    synchronize(device)
    together = time.perf_counter() - t0
    assert all(e is None for e in fleet.errors), fleet.errors

    n = len(configs)
    same = sum(identical(a, b) for a, b in zip(lone, fleet.results, strict=True))
    figures = {
        "device": str(device), "threads": torch.get_num_threads(), "cells": n,
        "seeds": len(seeds), "steps": args.steps,
        "alone_s": round(alone, 2), "fleet_s": round(together, 2),
        "alone_cells_per_hour": round(n * 3600 / alone, 1),
        "fleet_cells_per_hour": round(n * 3600 / together, 1),
        "speedup": round(alone / together, 2),
        "passes_per_update": round(fleet.passes / max(fleet.updates, 1), 2),
        "identical_to_alone": same,
    }
    print(f"{n} cells one by one: {alone:.1f} s ({figures['alone_cells_per_hour']} cells/hour "
          f"at {args.steps} updates)")
    print(f"{n} cells as one fleet: {together:.1f} s ({figures['fleet_cells_per_hour']} "
          f"cells/hour; {figures['passes_per_update']} passes per update), "
          f"{figures['speedup']}x; {same} of {n} cells byte-identical to their runs alone")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

"""Train several cells as one fleet and record each as its own stage would.

    python -m groklab.stages.fleet augmentation@x_plus_y-negation curriculum@x_plus_y-linear

The named training stages (one :func:`groklab.fleet.fleet_key`; `python -m groklab.repro
--fleets` groups them) train as one batched model (:mod:`groklab.fleet`), each member as in
its own stage on the plain loop (on a CPU bit for bit; on a GPU within float rounding).
Each cell's outputs are then written as `groklab.stages.train` writes them (results,
dataset card, checkpoints, the machine, its MLflow run), and
``dvc commit`` records the cells in dvc.lock, the entries `dvc repro` would write. This is
not a stage of dvc.yaml: it runs stages' work and lets DVC record it.

A cell whose loss stops being finite fails with its one-line message; the others are still
written and recorded, and the command exits 1. An interrupt writes no results, but the
fleet's snapshot (``--snapshots``, saved after an evaluation every ``--snapshot-every``
seconds) stays: the same command with the same code and thread count resumes from it, and the
cells come out byte-identical to an uninterrupted run. The snapshot is removed once the
results are written.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import groklab._interrupts  # noqa: F401 - first: a Ctrl-C while importing is one line
from groklab.budget import check_run_memory
from groklab.cells import Cell, cell_config, stage_cell
from groklab.config import ConfigError, RunConfig
from groklab.errors import Interrupted, OneLineParser
from groklab.machine import machine_record
from groklab.params import PARAMS_FILE, load_params
from groklab.stages.common import fail_cleanly
from groklab.stages.outputs import check_writable, save_run
from groklab.stages.train import card_of, device_of, log_run, seed_rows, variant
from groklab.tracking import check_tracking_env, record_interrupted

SNAPSHOTS = Path(".groklab") / "snapshots"  # under the repository; git ignores it


def fleet_cells(params: dict, stages: list[str]) -> tuple[list[Cell], list[RunConfig]]:
    """The cells the stage names give and their configurations, checked to share a fleet."""
    from groklab.fleet import stage_fleet_key

    keys = [stage_fleet_key(params, stage) for stage in stages]
    if None in keys or len(set(keys)) != 1:
        alone = [stage for stage, key in zip(stages, keys, strict=True) if key is None]
        raise ConfigError(
            f"stages {', '.join(stages)} cannot train as one fleet: "
            + (f"{', '.join(alone)} must run alone (dvc repro -s): dropout, one seed, or no "
               "network of its own" if alone else
               "their model, task shapes, batch size, updates, evaluation period, loss or "
               "device differ (groklab.fleet.fleet_key)"))
    cells = [stage_cell(params, stage) for stage in stages]
    configs = [cell_config(params, cell) for cell in cells]
    return cells, [c for c in configs if isinstance(c, RunConfig)]  # all are: keys are set


def commit(stages: list[str]) -> int:
    """``dvc commit`` the stages (argument list: no shell sees a name); its exit status."""
    return subprocess.run([sys.executable, "-m", "dvc", "--wait-for-lock", "commit", "--force",
                           "--quiet", *stages], check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m groklab.stages.fleet", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stages", nargs="+", help="training stages, e.g. baseline@x_plus_y")
    parser.add_argument("--params", default=PARAMS_FILE, help="parameters file")
    parser.add_argument("--models", type=Path, default=Path("models"),
                        help="output root of the results (committed to git)")
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"),
                        help="output root of the checkpoints (DVC's cache)")
    parser.add_argument("--no-commit", action="store_true",
                        help="write the outputs but leave dvc.lock alone")
    parser.add_argument("--snapshots", type=Path, default=SNAPSHOTS,
                        help=f"folder of resumable snapshots (default {SNAPSHOTS})")
    parser.add_argument("--snapshot-every", type=float, default=600.0, metavar="SECONDS",
                        help="seconds between snapshots, taken after an evaluation "
                             "(default 600; 0: every evaluation)")
    args = parser.parse_args(argv)
    if args.snapshot_every < 0:
        parser.error(f"--snapshot-every {args.snapshot_every:g}: must be 0 or more seconds")

    check_tracking_env()
    params = load_params(args.params)
    seeds = list(params["seeds"])
    cells, configs = fleet_cells(params, args.stages)
    label = f"fleet of {len(cells)} cell{'s' if len(cells) > 1 else ''}"
    check_run_memory(configs[0], len(seeds) * len(cells), label)
    for cell in cells:
        for path in (cell.path(args.models), cell.path(args.checkpoints)):
            check_writable(path)

    from groklab.cpu import CpuShare
    from groklab.fleet import snapshot_path, train_fleet
    from groklab.progress import ProgressBar

    snapshot = snapshot_path(args.snapshots, configs, seeds)
    try:
        with (CpuShare(configs[0].train.device),
              ProgressBar(f"{label} seeds {seeds}", configs[0].train.steps) as bar):
            fleet = train_fleet(configs, seeds, progress=bar.update, snapshot=snapshot,
                                snapshot_every=args.snapshot_every)
    except Interrupted as stop:
        if snapshot.is_file():
            print(f"groklab: the fleet's snapshot {snapshot} keeps its progress; the same "
                  "command resumes from it", file=sys.stderr)
        for cell, config in zip(cells, configs, strict=True):
            record_interrupted(cell.family, cell.stage, step=stop.step, task=cell.task,
                               variant=variant(cell, params), params=dataclasses.asdict(config))
        raise

    written = []
    for cell, config, result in zip(cells, configs, fleet.results, strict=True):
        if result is None:
            continue
        out, ckpts = cell.path(args.models), cell.path(args.checkpoints)
        rows = seed_rows(result)
        machine = machine_record(device_of(result))
        save_run(result, out, summary={"stage": cell.stage, "seeds": rows, "machine": machine},
                 card=card_of(config, seeds), checkpoints=ckpts)
        log_run(cell, config, result, out, rows, params, machine, ckpts)
        written.append(cell.stage)
        steps = [r["steps_to_99"] for r in rows]
        print(f"{cell.stage}: {sum(s is not None for s in steps)}/{len(seeds)} seeds reached "
              f"99% validation accuracy; steps to 99%: {steps}; written to {out}")
    if fleet.resumed_from:
        print(f"(resumed from the snapshot at update {fleet.resumed_from})")
    snapshot.unlink(missing_ok=True)  # the results are written: nothing left to resume
    failed = [(cell.stage, err) for cell, err in zip(cells, fleet.errors, strict=True) if err]
    for stage, err in failed:
        print(f"groklab: error: {stage}: {err}", file=sys.stderr)
    if written and not args.no_commit and commit(written):
        print(f"groklab: error: dvc commit failed for {', '.join(written)}; their outputs are "
              "written: run `dvc commit` to record them", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    fail_cleanly(lambda: sys.exit(main()))

"""DVC stage `generate@<task>`: a base task's equation table and its dataset card under data/.

The card holds what a reader of the results needs to know about the data: sizes,
vocabulary, a digest of the table, the split sizes per seed, `val_in_train` per seed
(0: no validation input also occurs in training) and, for every augmentation in
`augmentations`, `val_reachable` per seed (the validation pairs an augmented training
example can equal). Training builds the same equations from its own configuration.

Under DVC the command names no task: the stage reads it from its stage name (DVC_STAGE,
``generate@<task>``), so no name from params.yaml is part of a line a shell runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import groklab._interrupts  # noqa: F401 - first: a Ctrl-C while importing is one line
from groklab.budget import PART_KEYS, check_memory, table_bytes
from groklab.cards import dataset_card
from groklab.config import ConfigError, DataConfig
from groklab.errors import OneLineParser
from groklab.params import PARAMS_FILE, augmentation, load_params
from groklab.stages.common import fail_cleanly, tracker_for
from groklab.stages.outputs import atomic_dir, write_json


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description=__doc__)
    parser.add_argument("task", nargs="?",
                        help="task name, e.g. x_plus_y (default: DVC_STAGE's, generate@<task>)")
    parser.add_argument("--params", default=PARAMS_FILE, help="parameters file")
    parser.add_argument("--out", type=Path, default=Path("data"), help="data directory")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    args.task = args.task or _stage_task(params)
    cfg = DataConfig(**{**params["data"], "task": args.task})
    check_memory({"tables": table_bytes(cfg, len(params["seeds"]))}, f"generate@{args.task}",
                 PART_KEYS)
    augs = {name: augmentation(params, name) for name in params["augmentations"]}
    seeds = list(params["seeds"])

    import pandas as pd

    from groklab.tasks import build_task

    task = build_task(cfg, seeds)
    card = dataset_card(cfg, seeds, augs)
    table = pd.DataFrame(task.operands.numpy(),
                         columns=[f"x{i + 1}" for i in range(task.operands.shape[1])])
    table["label"] = task.labels.numpy()
    out = args.out / args.task
    with atomic_dir(out) as tmp:
        table.to_csv(tmp / "equations.csv", index=False)
        write_json(tmp / "card.json", card)
    with tracker_for("data", f"generate@{args.task}", task=args.task,
                     params={"data": vars(cfg), "seeds": seeds}) as tracker:
        tracker.log_metrics({"n_equations": card["n_equations"]})
        tracker.log_dataset(card, out / "card.json")
        tracker.log_artifacts([out / "card.json"])
    print(f"generate@{args.task}: {len(task)} equations, card at {out / 'card.json'}")


def _stage_task(params: dict) -> str:
    """The task of the DVC stage being run (``generate@<task>``), one of baseline.tasks."""
    stage = os.environ.get("DVC_STAGE") or ""
    family, _, task = stage.rpartition("dvc.yaml:")[2].partition("@")
    if family != "generate" or task not in params["baseline"]["tasks"]:
        raise ConfigError(f"DVC_STAGE={stage!r} is not generate@<task> with a task of "
                          f"baseline.tasks ({', '.join(params['baseline']['tasks'])}); "
                          "name the task")
    return task


if __name__ == "__main__":
    fail_cleanly(main)

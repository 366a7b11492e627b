"""DVC stage `generate@<task>`: the task's equation table and its dataset card under data/."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from groklab.cards import dataset_card
from groklab.config import DataConfig
from groklab.params import load_params
from groklab.stages.common import fail_cleanly, tracker_for
from groklab.stages.outputs import atomic_dir, write_json
from groklab.tasks import build_task


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("task", help="task name, e.g. x_plus_y")
    parser.add_argument("--params", default="params.yaml", help="parameters file")
    parser.add_argument("--out", type=Path, default=Path("data"), help="data directory")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cfg = DataConfig(**{**params["data"], "task": args.task})
    task = build_task(cfg)
    card = dataset_card(cfg, list(params["seeds"]))
    table = pd.DataFrame(task.operands.numpy(),
                         columns=[f"x{i + 1}" for i in range(task.operands.shape[1])])
    table["label"] = task.labels.numpy()
    out = args.out / args.task
    with atomic_dir(out) as tmp:
        table.to_csv(tmp / "equations.csv", index=False)
        write_json(tmp / "card.json", card)
    with tracker_for("data", f"generate@{args.task}", task=args.task,
                     params={"data": vars(cfg), "seeds": params["seeds"]}) as tracker:
        tracker.log_metrics({"n_equations": card["n_equations"]})
        tracker.log_artifacts([out / "card.json"])
    print(f"generate@{args.task}: {len(task)} equations, card at {out / 'card.json'}")


if __name__ == "__main__":
    fail_cleanly(main)

"""Per-seed summaries of a trained cell: curve metrics plus final whole-split metrics."""

from __future__ import annotations

from typing import Any

from groklab.metrics import summarize_history
from groklab.tasks import build_task, chance_accuracy
from groklab.train import TrainResult


def seed_summaries(result: TrainResult) -> list[dict[str, Any]]:
    """One flat dict of scalars per seed (see :func:`groklab.metrics.summarize_history`).

    ``final_*`` values come from evaluating the whole training and validation splits
    after the last update, not from the last logged batch means.
    """
    chance = chance_accuracy(build_task(result.config.data))
    out = []
    for seed, hist in result.history.groupby("seed", sort=False):
        summary: dict[str, Any] = {"seed": int(seed)}
        summary.update(summarize_history(hist.reset_index(drop=True),
                                         budget=result.config.train.steps, chance=chance))
        final = result.final.set_index("seed").loc[seed]
        summary.update({k: _scalar(v) for k, v in final.items()})
        summary["clean_val_acc"] = summary["final_clean_val_acc"]
        summary["steps_done"] = result.steps_done
        out.append(summary)
    return out


def _scalar(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v

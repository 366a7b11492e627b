"""Dataset cards: what a task's equation table holds, and the leakage of each augmentation."""

from __future__ import annotations

import hashlib
from typing import Any

from groklab.augment import val_reachable
from groklab.config import AugmentConfig, DataConfig
from groklab.tasks import Task, build_task, val_in_train


def labels_digest(task: Task) -> str:
    """SHA-256 of the operands and labels: the identity of an equation table."""
    h = hashlib.sha256()
    h.update(task.operands.contiguous().numpy().tobytes())
    h.update(task.labels.contiguous().numpy().tobytes())
    return h.hexdigest()


def dataset_card(cfg: DataConfig, seeds: list[int],
                 augmentations: dict[str, AugmentConfig]) -> dict[str, Any]:
    """Sizes, vocabulary, split sizes and ``val_in_train`` per seed, and ``val_reachable``
    per seed under each augmentation of ``augmentations`` that the task supports."""
    task = build_task(cfg, seeds)
    card: dict[str, Any] = {
        "task": cfg.task,
        "config": {k: v for k, v in vars(cfg).items() if k != "task"},
        "n_equations": len(task),
        "n_operands": task.operands.shape[1],
        "n_classes": task.n_classes,
        "vocab_size": task.vocab_size,
        "seq_len": task.seq_len,
        "example_tokens": task.tokens[min(5, len(task) - 1)].tolist(),
        "digest": labels_digest(task),
        "splits": {},
        "val_reachable": {},
    }
    splits = {seed: task.split(cfg.train_fraction, seed) for seed in seeds}
    tokens = task.tokens
    for seed, sp in splits.items():
        card["splits"][str(seed)] = {"train": len(sp.train), "val": len(sp.val),
                                     "val_in_train": val_in_train(tokens, sp)}
    for name, aug in augmentations.items():
        if not aug.active:
            continue
        try:
            per_seed = {str(seed): val_reachable(task, sp.train, sp.val, aug)
                        for seed, sp in splits.items()}
        except NotImplementedError:  # the augmentation is not defined for this task
            continue
        card["val_reachable"][name] = per_seed
    return card

"""Named optimiser variants of the papers (seeds 002, 003).

A variant is an :class:`~groklab.config.OptimConfig` plus two optional overrides:
``batch_size`` (``None``: full batch) and ``dropout``. ``params.yaml`` carries the same
table under ``optimizers:`` for the pipeline (a test keeps the two equal); the
single-run CLI reads it from here.
"""

from __future__ import annotations

from typing import Any

from groklab.config import ConfigError, RunConfig

_ADAMW = {"kind": "adamw", "lr": 0.001, "betas": [0.9, 0.98], "weight_decay": 0.5, "warmup": 50}

OPTIMIZERS: dict[str, dict[str, Any]] = {
    "adamw": dict(_ADAMW),  # the base: mini-batch AdamW
    "adamw_fullbatch": {**_ADAMW, "batch_size": None},
    "adam": {**_ADAMW, "kind": "adam", "weight_decay": 0.0},
    "sgd_nesterov": {"kind": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True,
                     "weight_decay": 0.0, "warmup": 50},
    "dropout": {**_ADAMW, "dropout": 0.1},
    "wd_0.05": {**_ADAMW, "weight_decay": 0.05},
    "wd_1.0": {**_ADAMW, "weight_decay": 1.0},
    # seed 004's parity MLP: plain SGD, lr 1e-2, weight decay 1e-2
    "sgd_parity": {"kind": "sgd", "lr": 0.01, "momentum": 0.0, "weight_decay": 0.01, "warmup": 0},
}

_MISSING = object()


def apply_variant(cfg: RunConfig, name: str,
                  variants: dict[str, dict[str, Any]] | None = None) -> RunConfig:
    """``cfg`` with optimiser variant ``name`` (from ``variants``, default the table above)."""
    variants = OPTIMIZERS if variants is None else variants
    if name not in variants:
        raise ConfigError(f"optimizer={name!r} is not known; choose one of: {', '.join(variants)}")
    optim = dict(variants[name])
    sections: dict[str, dict[str, Any]] = {"optim": optim}
    if (batch := optim.pop("batch_size", _MISSING)) is not _MISSING:
        sections["train"] = {"batch_size": batch}
    if (dropout := optim.pop("dropout", _MISSING)) is not _MISSING:
        sections["model"] = {"dropout": dropout}
    return cfg.replace(**sections)

"""Named optimiser variants of the papers, as overrides of a run's config sections.

``params.yaml`` carries the same table under ``optimizers:`` for the pipeline (a test
keeps the two equal); the single-run CLI reads it from here.
"""

from __future__ import annotations

from typing import Any

from groklab.config import ConfigError, RunConfig

# name -> {section: {field: value}} applied on top of the base configuration
OPTIMIZERS: dict[str, dict[str, dict[str, Any]]] = {
    "adamw": {},  # mini-batch AdamW, lr 1e-3, betas (0.9, 0.98), weight decay 0.5
    "adamw_fullbatch": {"train": {"batch_size": None}},
    "adam": {"optim": {"kind": "adam", "weight_decay": 0.0}},
    "sgd_nesterov": {"optim": {"kind": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True,
                               "weight_decay": 0.0}},
    "dropout": {"model": {"dropout": 0.1}},
    "wd_0.05": {"optim": {"weight_decay": 0.05}},
    "wd_1.0": {"optim": {"weight_decay": 1.0}},
}


def apply_variant(cfg: RunConfig, name: str,
                  variants: dict[str, dict[str, dict[str, Any]]] | None = None) -> RunConfig:
    """``cfg`` with the overrides of optimiser variant ``name`` applied."""
    variants = OPTIMIZERS if variants is None else variants
    if name not in variants:
        raise ConfigError(f"optimizer={name!r} is not known; choose one of: {', '.join(variants)}")
    return cfg.replace(**(variants[name] or {}))

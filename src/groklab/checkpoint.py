"""Per-seed checkpoints cut out of a batched model, and rebuilding a model from one."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from groklab.config import RunConfig
from groklab.models import build_model
from groklab.tasks import build_task


def member_state(model: nn.Module, member: int) -> dict[str, torch.Tensor]:
    """State dict of one member: every tensor's leading member dim cut to [member]."""
    return {k: v[member:member + 1].detach().clone() for k, v in model.state_dict().items()}


def checkpoint(model: nn.Module, cfg: RunConfig, seeds: list[int], member: int,
               step: int) -> dict[str, Any]:
    """What to save for seed ``seeds[member]``: weights plus the config that rebuilds them."""
    return {"state_dict": member_state(model, member), "config": cfg.to_dict(),
            "seed": seeds[member], "step": step}


def load_model(ckpt: dict[str, Any]) -> nn.Module:
    """Rebuild a one-member model from :func:`checkpoint` output (strict key check)."""
    cfg = RunConfig.from_dict(ckpt["config"])
    model = build_model(cfg.model, build_task(cfg.data, [ckpt["seed"]]), [ckpt["seed"]])
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model

"""Optimisers and the learning-rate schedule (linear warm-up, then constant)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from groklab.config import OptimConfig


def _without_dynamo_import(base: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """``base`` with torch's own ``add_param_group``, ``zero_grad`` and ``step`` bodies.

    torch wraps these methods only for torch.compile's sake (keeping it out, or marking
    graph breaks around ``step``), and each wrapper imports ``torch._dynamo`` on its first
    call: about 1 s of a training stage's 2 s start-up on the CPU, though nothing here is
    compiled. ``step``'s wrapper also sets grad mode to the ``differentiable`` option,
    which is never set here, so the body runs under ``no_grad``. The numbers are torch's.
    """
    body = {name: inspect.unwrap(getattr(base, name))
            for name in ("add_param_group", "zero_grad", "step")}

    def add_param_group(self: torch.optim.Optimizer, param_group: dict[str, Any]) -> None:
        body["add_param_group"](self, param_group)

    def zero_grad(self: torch.optim.Optimizer, set_to_none: bool = True) -> None:
        body["zero_grad"](self, set_to_none)

    def step(self: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        with torch.no_grad():
            return body["step"](self, closure)

    return type(base.__name__, (base,), {
        "add_param_group": add_param_group, "zero_grad": zero_grad, "step": step,
        "__module__": __name__,
        "__doc__": f"torch.optim.{base.__name__}, used without importing torch._dynamo."})


AdamW = _without_dynamo_import(torch.optim.AdamW)
Adam = _without_dynamo_import(torch.optim.Adam)
SGD = _without_dynamo_import(torch.optim.SGD)


def build_optimizer(cfg: OptimConfig, params: Iterable[nn.Parameter],
                    lr: Tensor | None = None) -> torch.optim.Optimizer:
    """The optimiser ``cfg.kind`` over ``params``.

    Weight decay applies to every parameter, as in the reference (decoupled for adamw and
    sgd's own L2 for sgd; adam_l2 is torch's Adam with L2, as Grokfast's code). All three optimisers
    act elementwise, so an ensemble's members keep separate state in one optimiser.
    ``lr``, when given, is a one-element tensor the caller sets before each step (the
    graphed loop writes the warm-up rate into it on the device): the optimisers are then
    the fused, capturable kernels that read it there.
    """
    params = list(params)
    if lr is not None:
        return _graph_safe_optimizer(cfg, params, lr)
    # The fused kernels update all tensors in one pass (CPU and CUDA alike).
    if cfg.kind == "adamw":
        return AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                     fused=True)
    if cfg.kind in ("adam", "adam_l2"):  # adam has no decay (OptimConfig checks), adam_l2 L2
        return Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                    fused=True)
    if cfg.kind == "sgd":
        return SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                   weight_decay=cfg.weight_decay)
    raise AssertionError(cfg.kind)  # OptimConfig validated the name


def _graph_safe_optimizer(cfg: OptimConfig, params: list[nn.Parameter], lr: Tensor
                          ) -> torch.optim.Optimizer:
    if cfg.kind in ("adamw", "adam", "adam_l2"):
        kind = AdamW if cfg.kind == "adamw" else Adam
        return kind(params, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=True,
                    capturable=True)
    if cfg.kind == "sgd":
        return SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                   weight_decay=cfg.weight_decay, fused=True)
    raise AssertionError(cfg.kind)


def warmup_table(cfg: OptimConfig, steps: int) -> list[float]:
    """The learning rate of updates 0..steps (the last is recorded after the final one)."""
    return [cfg.lr * warmup_factor(t, cfg.warmup) for t in range(steps + 1)]


def warmup_factor(step: int, warmup: int) -> float:
    """Multiplier of the base learning rate for update ``step`` (0-based).

    Rises linearly over the first ``warmup`` updates, ``(step + 1) / warmup``, so the
    first update already moves the weights, and stays at 1 afterwards.
    """
    if warmup <= 0:
        return 1.0
    return min((step + 1) / warmup, 1.0)


def build_schedule(cfg: OptimConfig, opt: torch.optim.Optimizer) -> LambdaLR:
    """Linear warm-up over ``cfg.warmup`` updates, then the constant base rate."""
    return LambdaLR(opt, lambda step: warmup_factor(step, cfg.warmup))

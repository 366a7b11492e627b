"""Training losses, one registry: per-example losses of batched logits.

Every loss takes logits ``(S, B, C)`` and labels ``(S, B)`` and returns ``(S, B)``.

StableMax (Prieto et al. 2025, "Grokking at the edge of numerical stability") replaces
softmax's ``exp`` with ``s(x) = x + 1`` for ``x >= 0`` and ``1 / (1 - x)`` for ``x < 0``, so
the probability of the right class cannot round to exactly 1 (softmax collapse) while the
logits grow. As the authors' code does, it is computed in float64 and left in float64.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

STABLEMAX_EPS = 1e-30  # the authors' guard in 1 / (1 - x + eps)


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Softmax cross-entropy per example (the logits' dtype, float32 here)."""
    return F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")


def stablemax_s(x: Tensor) -> Tensor:
    """``s(x)``: ``x + 1`` where ``x >= 0``, ``1 / (1 - x + eps)`` where ``x < 0``."""
    return torch.where(x < 0, 1 / (1 - x + STABLEMAX_EPS), x + 1)


def stablemax_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """``-log(s(x_y) / sum_c s(x_c))`` per example, in float64."""
    s = stablemax_s(logits.double())
    log_probs = torch.log(s / s.sum(-1, keepdim=True))
    return -log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "cross_entropy": cross_entropy,
    "stablemax": stablemax_cross_entropy,
}


@torch.no_grad()
def softmax_collapse(losses: Tensor) -> Tensor:
    """Share of examples (S,) whose float32 softmax cross-entropy ``losses`` (S, N) is
    exactly 0: the right class's probability rounded to 1, so the example gives no gradient
    (Prieto et al.'s softmax collapse)."""
    return (losses.float() == 0).float().mean(-1)

"""Operand augmentation of sampled training batches, and the leakage it opens.

An augmentation is a pair of probabilities: swap the operands (reversal), then negate
them (negation; the dividend only for x_div_y, inverses for permutations), each drawn
independently per example. The label is recomputed from the new operands, and an
example whose transform would be invalid (a zero divisor) keeps its original operands.
"""

from __future__ import annotations

import torch
from torch import Tensor

from groklab.config import AugmentConfig, ConfigError
from groklab.tasks import Task

# The augmentation settings of a run; the named ones are `augmentations` in params.yaml.
Augmentation = AugmentConfig


def get_augmentation(aug: Augmentation, task: Task) -> Augmentation:
    """``aug``, checked to be defined for ``task``."""
    probe = task.operands[:1]
    try:
        if aug.p_reverse:
            task.reverse(probe)
        if aug.p_negate:
            task.negate(probe)
    except NotImplementedError as err:
        raise ConfigError(f"aug={aug.name!r}: {err}; use an augmentation that changes "
                          "neither order nor sign (e.g. baseline)") from err
    return aug


def _apply(task: Task, ops: Tensor, transform, prob: float, gen: torch.Generator) -> Tensor:
    if prob <= 0:
        return ops
    draw = torch.rand(ops.shape[:-1], generator=gen, device=ops.device) < prob
    new = transform(ops)
    keep = ~(draw & task.valid(new))
    return torch.where(keep.unsqueeze(-1), ops, new)


def augment(task: Task, ops: Tensor, aug: Augmentation, gen: torch.Generator) -> Tensor:
    """Augmented copies of operand rows ``ops`` (..., K); labels are ``task.label`` of them."""
    ops = _apply(task, ops, task.reverse, aug.p_reverse, gen)
    return _apply(task, ops, task.negate, aug.p_negate, gen)


def images(task: Task, ops: Tensor, aug: Augmentation) -> list[Tensor]:
    """Every operand row that ``aug`` can turn ``ops`` into (the identity included)."""
    out = [ops]
    if aug.p_reverse:
        out += [_keep_valid(task, o, task.reverse(o)) for o in list(out)]
    if aug.p_negate:
        out += [_keep_valid(task, o, task.negate(o)) for o in list(out)]
    return out


def _keep_valid(task: Task, old: Tensor, new: Tensor) -> Tensor:
    return torch.where(task.valid(new).unsqueeze(-1), new, old)


def reachable(task: Task, train_idx: Tensor, aug: Augmentation) -> Tensor:
    """Boolean mask over all equations: those an augmented training example can become.

    The training examples themselves are included, so for a validation index ``v``
    ``reachable[v]`` says whether training on augmented data can show the model ``v``.
    """
    mask = torch.zeros(len(task), dtype=torch.bool)
    for img in images(task, task.operands[train_idx], aug):
        mask[task.index(img)] = True
    return mask


def val_reachable(task: Task, train_idx: Tensor, val_idx: Tensor, aug: Augmentation) -> float:
    """Fraction of validation equations reachable from the training split under ``aug``."""
    if not aug.active:
        return 0.0
    return reachable(task, train_idx, aug)[val_idx].double().mean().item()

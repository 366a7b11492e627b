"""Which training examples a batch may be drawn from at each update.

A curriculum orders the training split (its ``order``) and, at update t, samples only from
the first fraction delta(t) of it (its ``pacing``; ties in difficulty at the cut are all
included). Pacings:

* ``none``: the whole split from the start (the baseline).
* ``linear``: delta grows linearly from ``start`` to 1 over ``ramp`` of training.
* ``sqrt``: competence-based pacing, delta = sqrt(start^2 + (1 - start^2) t / T_ramp)
  (Platanios et al. 2019).
* ``step``: delta starts at ``start`` and grows by ``step_size`` whenever the training
  accuracy on the current pool (measured on the batches since the last evaluation)
  reaches ``step_threshold``.

Orders: ``easiest_first`` (by difficulty, ties in a seeded random order), ``hardest_first``,
and ``random`` (difficulty ignored: the "without difficulty parameter" ablation of the
curriculum paper).
The named schedules (linear, sqrt, step, random, anti, ...) are `curricula` in params.yaml.

Difficulty: max operand for the modular tasks (largest operand for multi_add); the
number of inversions of the result for permutations; the number of set informative
bits for parity.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from groklab import rng
from groklab.config import CurriculumConfig
from groklab.tasks import PermutationTask, Task


def difficulty(task: Task, ops: Tensor) -> Tensor:
    """Difficulty score of each operand row (higher is harder), as a float tensor."""
    if isinstance(task, PermutationTask):
        result = task.perms[task.label(ops)]  # (N, n) one-line notation of a∘b
        i, j = torch.triu_indices(result.shape[-1], result.shape[-1], offset=1)
        return (result[..., i] > result[..., j]).sum(-1).float()
    if task.name == "parity":
        return ops[..., : task.k].sum(-1).float()
    return ops.max(-1).values.float()


def pacing(cfg: CurriculumConfig, step: int, total_steps: int) -> float:
    """delta(step) in (0, 1] for the time-driven pacings (linear, sqrt)."""
    if cfg.pacing not in ("linear", "sqrt"):
        raise ValueError(f"pacing {cfg.pacing!r} is not paced by time")
    progress = min(1.0, step / max(1.0, cfg.ramp * total_steps))
    if cfg.pacing == "sqrt":
        return math.sqrt(cfg.start**2 + (1 - cfg.start**2) * progress)
    return cfg.start + (1 - cfg.start) * progress


class PoolSampler:
    """Draws batches of equation indices for every member from its current pool.

    ``train_idx`` is (S, N_train): each member's training split. Each member draws with
    its own generator, so a member samples exactly what it would alone.
    """

    def __init__(self, cfg: CurriculumConfig, task: Task, train_idx: Tensor, seeds: list[int],
                 total_steps: int, generators: list[torch.Generator]):
        self.cfg, self.total_steps, self.generators = cfg, total_steps, generators
        self.members, self.n_train = train_idx.shape
        self.advances = [0] * self.members  # step schedule: times each member's pool grew
        self.order, self.pool_end = train_idx, None
        if cfg.pacing == "none":
            return
        orders, ends = [], []
        for s, seed in enumerate(seeds):
            members_idx = train_idx[s].cpu()
            score = difficulty(task, task.operands[members_idx])
            if cfg.order == "hardest_first":
                score = -score
            # Sort by difficulty, ties in a seeded random order.
            gen = rng.generator(seed, "curriculum")
            shuffled = torch.randperm(self.n_train, generator=gen)
            perm = shuffled[score[shuffled].argsort(stable=True)]
            sorted_score = score[perm]
            # ends[k-1]: size of the pool holding the k easiest examples and every example
            # tied with the k-th (the quantile cut includes ties).
            ends.append(torch.searchsorted(sorted_score, sorted_score, right=True))
            if cfg.order == "random":  # same pool sizes, difficulty ignored
                perm = torch.randperm(self.n_train, generator=gen)
            orders.append(members_idx[perm])
        self.order = torch.stack(orders).to(train_idx.device)
        self.pool_end = torch.stack(ends)

    def pool_size(self, s: int, step: int) -> int:
        """How many of member ``s``'s ordered training examples are in its pool now."""
        if self.pool_end is None:
            return self.n_train
        if self.cfg.pacing == "step":
            delta = min(1.0, self._step_delta(s))
        else:
            delta = pacing(self.cfg, step, self.total_steps)
        # The tolerance keeps float noise (0.2 + 0.4 = 0.6000000000000001) from adding one
        # example, which would pull in the whole next difficulty level with its ties.
        k = max(1, min(self.n_train, math.ceil(delta * self.n_train - 1e-9)))
        return int(self.pool_end[s, k - 1])

    def sample(self, step: int, batch_size: int | None) -> Tensor:
        """Equation indices (S, B) for update ``step``; ``None`` takes every pool example."""
        if batch_size is None:
            if self.pool_end is not None:
                raise ValueError("a curriculum needs sampled batches; set a batch_size")
            return self.order
        rows = []
        for s, gen in enumerate(self.generators):
            n = self.pool_size(s, step)
            rows.append(torch.randint(0, n, (batch_size,), generator=gen, device=gen.device))
        return self.order.gather(1, torch.stack(rows))

    def observe(self, member_train_acc: list[float]) -> None:
        """Advance the step schedule for members that fit their current pool."""
        if self.cfg.pacing != "step":
            return
        for s, acc in enumerate(member_train_acc):
            if acc >= self.cfg.step_threshold and self._step_delta(s) < 1.0:
                self.advances[s] += 1

    def _step_delta(self, s: int) -> float:
        """The step schedule's pool fraction for member ``s`` (may exceed 1 once full)."""
        return self.cfg.start + self.advances[s] * self.cfg.step_size


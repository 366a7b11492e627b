"""The training loop with every update and evaluation as one CUDA graph replay each.

A small model's update on a GPU is a few hundred kernels of microseconds each, so launching
them one by one from Python costs more than running them. Here the whole update (batch
sampling from the curriculum pool, augmentation, forward, backward, the optimiser step at
the warm-up learning rate) and the whole evaluation (validation split, training-curve
sample, the history row, the grokking bookkeeping) are captured once as CUDA graphs and
replayed. What a graph needs to change from one replay to the next lives on the device:

* an update counter, which indexes the learning-rate table (the optimisers are the fused
  kernels reading a tensor ``lr``), the time-paced curriculum pool sizes and the random
  numbers (:class:`groklab.counter_rng.CounterRNG`, a hash of seed key, counter and element:
  member ``s`` draws what it would alone);
* the sums behind ``batch_loss``/``batch_acc``, the ``step`` curriculum's advances (its
  ``observe`` on batch accuracy runs in the evaluation graph), each member's first step at
  99% validation accuracy, and an ``active`` flag that early stopping (``stop_after_grok``)
  clears: after it, replays leave the weights unchanged (learning rate 0) and record nothing;
* the history, a preallocated (S, evaluations, 10) table the evaluation graph writes a row of.

The host replays the graphs and reads the history back every ``SYNC_EVERY`` evaluations,
then calls ``progress`` for each new row and raises :class:`~groklab.errors.TrainingDiverged`
at the first non-finite loss, as the plain loop does.

The same step logic runs eagerly (no capture) on any device: on the CPU the tests check it
against the plain loop, and on a GPU it is the reference the graphs are tested against.
If warm-up or capture fails, :class:`CaptureError` says why and the caller trains with the
plain loop instead.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch
from torch import Tensor, nn

from groklab import rng
from groklab.augment import Augmentation
from groklab.config import RunConfig, TrainConfig
from groklab.counter_rng import CounterRNG, below, bernoulli
from groklab.curriculum import PoolSampler
from groklab.fourier import Recorder
from groklab.gradients import build_gradient_transform
from groklab.losses import LOSSES, softmax_collapse
from groklab.optim import build_optimizer, warmup_table
from groklab.tasks import Task
from groklab.train import (
    GROK_THRESHOLD,
    Progress,
    TrainData,
    clean_accuracy,
    diverged,
    evaluate_examples,
    note_first_update,
)

log = logging.getLogger(__name__)

SYNC_EVERY = 25  # evaluations between reads of the history (captured runs)
CUDA_EVAL_CHUNK = 8192  # examples per forward pass when evaluating on a GPU
WARMUP_REPLAYS = 3  # eager updates before capture (cuBLAS handles, optimiser state)


class CaptureError(RuntimeError):
    """Warm-up or CUDA graph capture failed; the message names the reason."""


class GraphedLoop:
    """One cell's training as an update step and an evaluation step on device state.

    ``capture`` (CUDA only) records both as CUDA graphs; otherwise they run eagerly.
    Construction warms up and captures, so a :class:`CaptureError` comes before any update.
    The host reads the history every ``sync_every`` evaluations (default: every one when
    eager, :data:`SYNC_EVERY` when captured).
    """

    def __init__(self, cfg: RunConfig, seeds: list[int], task: Task, aug: Augmentation,
                 data: TrainData, model: nn.Module, capture: bool, sync_every: int | None = None):
        tc = cfg.train
        self.cfg, self.seeds, self.data, self.model, self.aug = cfg, seeds, data, model, aug
        device = data.tokens.device
        self.task = _task_on(task, device)
        self.chunk = CUDA_EVAL_CHUNK if device.type == "cuda" else 1024
        # Validation split and training-curve sample, evaluated as one set (one forward).
        self.n_val = data.val_tokens.shape[1]
        self.eval_tokens = torch.cat([data.val_tokens, data.curve_tokens], 1)
        self.eval_labels = torch.cat([data.val_labels, data.curve_labels], 1)
        self.sync_every = sync_every or (SYNC_EVERY if capture else 1)
        S, n_train = data.train_idx.shape
        # The shared-prefix shortcut keys prefixes with torch.unique, whose output size
        # depends on the data; the per-example path is exact too and has static shapes.
        self.had_prefix = getattr(model, "use_prefix", None)
        if self.had_prefix is not None:
            model.use_prefix = False
        model.train()

        self.lr_table = torch.tensor(warmup_table(cfg.optim, tc.steps),
                                     dtype=torch.float64).float().to(device)
        self.lr = torch.zeros((), device=device)
        self.opt = build_optimizer(cfg.optim, model.parameters(), lr=self.lr)
        self.transform = build_gradient_transform(cfg.optim, list(model.parameters()))
        self.loss_fn = LOSSES[tc.loss]

        sampler = PoolSampler(tc.curriculum, task, data.train_idx, seeds, tc.steps,
                              [rng.generator(s, "data") for s in seeds])
        self.order = sampler.order  # (S, N_train): each member's examples, easiest first
        self.batch_size = tc.batch_size or n_train
        self.paced, self.step_table, self.max_advances = _pool_tables(sampler, tc)
        self.uses = (1 if tc.batch_size else 0) + (aug.p_reverse > 0) + (aug.p_negate > 0)
        self.rng = CounterRNG([rng.derived_seed(s, "data") for s in seeds], tc.steps,
                              self.batch_size * self.uses, device)

        def zeros(*shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
            return torch.zeros(*shape, dtype=dtype, device=device)

        self.counter = zeros(1, dtype=torch.long)  # updates done (while active)
        self.active = zeros(1, dtype=torch.long)  # 0 once stop_after_grok is met
        self.loss_sum, self.acc_sum, self.batches = zeros(S), zeros(S), zeros(1)
        self.grokked_at = zeros(S, dtype=torch.long)  # -1 until val acc first >= 0.99
        self.advances = zeros(S, dtype=torch.long)  # `step` curriculum
        self.pool = zeros(S, 1, dtype=torch.long)  # current pool size per member
        n_evals = -(-tc.steps // tc.eval_every) + 1
        self.history = zeros(S, n_evals + 1, 10)  # one spare row: writes after a stop land there
        self.n_evals = zeros(1, dtype=torch.long)
        self._reset_state()

        self.graphs: tuple[torch.cuda.CUDAGraph, torch.cuda.CUDAGraph] | None = None
        if capture:
            self._capture()

    # --- the two steps: tensor operations only, no host synchronisation -------------------

    def batch(self) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        """The batch of the update at the counter: equation indices (S, B), augmented
        operands (S, B, K) (None without augmentation), tokens and labels."""
        words = (self.rng.draw(self.counter).view(len(self.seeds), self.batch_size, -1)
                 if self.uses else None)
        if self.cfg.train.batch_size is None:
            idx = self.order
        else:
            if self.paced is not None:
                self.pool.copy_(self.paced.index_select(0, self.counter).view(-1, 1))
            assert words is not None
            idx = self.order.gather(1, below(words[..., 0], self.pool))
        d = self.data
        if not self.aug.active:
            return idx, None, d.tokens[idx], d.labels[idx]
        ops = self._augment(d.operands[idx], words)
        return idx, ops, self.task.encode(ops), self.task.label(ops)

    def update_step(self) -> None:
        """One update of every member, at the device counter."""
        _, _, tokens, labels = self.batch()
        logits = self.model(tokens)  # (S, B, C)
        loss = self.loss_fn(logits, labels).mean(1)
        self.opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # members are independent: each gets its own gradient
        if self.transform is not None:
            self.transform()
        self.lr.copy_((self.lr_table.index_select(0, self.counter) * self.active).view(()))
        self.opt.step()
        with torch.no_grad():
            self.loss_sum += loss.detach()
            self.acc_sum += (logits.argmax(-1) == labels).float().mean(1)
            self.batches += 1
            self.counter += self.active

    def _augment(self, ops: Tensor, words: Tensor | None) -> Tensor:
        """``augment.augment`` with the draws taken from ``words`` (reversal, then negation)."""
        use = 1 if self.cfg.train.batch_size is not None else 0
        for p, transform in ((self.aug.p_reverse, self.task.reverse),
                             (self.aug.p_negate, self.task.negate)):
            if p <= 0:
                continue
            new = transform(ops)
            assert words is not None
            keep = ~(bernoulli(words[..., use], p) & self.task.valid(new))
            ops = torch.where(keep.unsqueeze(-1), ops, new)
            use += 1
        return ops

    @torch.no_grad()
    def eval_step(self) -> None:
        """Record a history row at the counter; grokking, early stop and pool bookkeeping."""
        d, tc = self.data, self.cfg.train
        losses, right = evaluate_examples(self.model, self.eval_tokens, self.eval_labels,
                                          self.chunk)
        val_loss, correct = losses[:, :self.n_val].mean(1), right[:, :self.n_val]
        tr_loss, tr_correct = losses[:, self.n_val:].mean(1), right[:, self.n_val:]
        clean_acc = clean_accuracy(correct, d.val_reachable)
        b_loss, b_acc = self.loss_sum / self.batches, self.acc_sum / self.batches  # NaN at 0
        S = len(self.seeds)
        val_acc = correct.float().mean(1)
        row = torch.stack([self.counter.float().expand(S), tr_loss, tr_correct.float().mean(1),
                           b_loss, b_acc, val_loss, val_acc, clean_acc,
                           self.lr_table.index_select(0, self.counter).expand(S),
                           softmax_collapse(losses[:, self.n_val:])], 1)
        self.history.index_copy_(1, self.n_evals, row.unsqueeze(1))
        self.n_evals += self.active
        newly = (self.grokked_at < 0) & (val_acc >= GROK_THRESHOLD)
        self.grokked_at.copy_(torch.where(newly, self.counter, self.grokked_at))
        if self.step_table is not None:  # observe: NaN batch accuracy (step 0) never advances
            fit = (b_acc >= tc.curriculum.step_threshold) & (self.advances < self.max_advances)
            self.advances += fit.long()
            self.pool.copy_(self.step_table.gather(0, self.advances.view(1, -1)).view(-1, 1))
        if tc.stop_after_grok is not None:  # as the plain loop: checked after updates only
            done = ((self.grokked_at >= 0).all() & (self.batches > 0)
                    & (self.counter >= self.grokked_at.max() + tc.stop_after_grok))
            self.active *= (~done).long()
        self.loss_sum.zero_()
        self.acc_sum.zero_()
        self.batches.zero_()

    # --- capture and the host loop ---------------------------------------------------------

    def _reset_state(self) -> None:
        for t in (self.counter, self.loss_sum, self.acc_sum, self.batches, self.advances,
                  self.n_evals):
            t.zero_()
        self.active.fill_(1)
        self.grokked_at.fill_(-1)
        first = self.step_table[0] if self.step_table is not None else (
            self.paced[0] if self.paced is not None else
            torch.full_like(self.pool[:, 0], self.order.shape[1]))
        self.pool.copy_(first.view(-1, 1))

    def _capture(self) -> None:
        """Warm up on a side stream, restore the initial state, capture both steps."""
        stream = torch.cuda.current_stream()
        try:
            initial = [p.detach().clone() for p in self.model.parameters()]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(WARMUP_REPLAYS):
                    self.update_step()
                self.eval_step()
            torch.cuda.current_stream().wait_stream(side)
            with torch.no_grad():  # undo the warm-up: fresh weights and optimiser state
                for p, p0 in zip(self.model.parameters(), initial, strict=True):
                    p.copy_(p0)
                for state in self.opt.state.values():
                    for value in state.values():
                        if torch.is_tensor(value):
                            value.zero_()
                if self.transform is not None:
                    self.transform.reset()
            self._reset_state()
            update, evaluation = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
            with torch.cuda.graph(update):
                self.update_step()
            with torch.cuda.graph(evaluation):
                self.eval_step()
            torch.cuda.synchronize()
        except Exception as err:  # any failure: the caller falls back to the plain loop
            # A failed capture_end leaves torch.cuda.graph's capture stream current.
            torch.cuda.set_stream(stream)
            first_line = (str(err).splitlines() or [""])[0]
            raise CaptureError(f"{type(err).__name__}: {first_line}") from err
        self.graphs = (update, evaluation)

    def _update(self) -> None:
        if self.graphs:
            self.graphs[0].replay()
        else:
            self.update_step()

    def _eval(self) -> None:
        if self.graphs:
            self.graphs[1].replay()
        else:
            self.eval_step()

    def run(self, progress: Callable[[Progress], None] | None = None,
            measure: Recorder | None = None
            ) -> tuple[list[Tensor], int]:
        """Train; returns the history rows (S, 10) per evaluation and the updates done.

        ``measure(model, step)`` (Fourier progress measures) runs eagerly between replays,
        outside the graphs, after each evaluation's replay; it skips steps not due."""
        tc = self.cfg.train
        rows: list[Tensor] = []
        try:
            self._eval()
            if measure is not None:
                measure(self.model, 0)
            self._collect(rows, progress)
            launched, pending = 0, 0
            while launched < tc.steps:
                for _ in range(min(tc.eval_every, tc.steps - launched)):
                    self._update()
                    launched += 1
                    if launched == 1:
                        note_first_update(self.counter.device)
                self._eval()
                if (measure is not None and measure.due(launched, launched == tc.steps)
                        and bool(self.active.item())):  # a sync, only when one is due
                    measure(self.model, launched, final=launched == tc.steps)
                pending += 1
                if pending >= self.sync_every or launched == tc.steps:
                    pending = 0
                    if self._collect(rows, progress):
                        break
        finally:
            if self.had_prefix is not None:
                self.model.use_prefix = self.had_prefix
            self.opt.zero_grad(set_to_none=True)  # gradients live in the graph's memory pool
        return rows, int(self.counter.item())

    def _collect(self, rows: list[Tensor], progress: Callable[[Progress], None] | None
                 ) -> bool:
        """Read the new history rows; report each; True once early stopping has happened."""
        tc = self.cfg.train
        table = self.history[:, len(rows):int(self.n_evals.item())].cpu()
        for j in range(table.shape[1]):
            row = table[:, j]
            step = int(row[0, 0])
            losses = row[:, [1, 5, 3]] if step > 0 else row[:, [1, 5]]  # no batches at 0
            bad = ~torch.isfinite(losses).all(1)
            if bad.any():
                which = [self.seeds[i] for i in bad.nonzero().flatten().tolist()]
                raise diverged(self.cfg, step, which)
            rows.append(row)
            if progress is not None:
                progress(Progress(step, tc.steps, row[:, 6].tolist()))
        if tc.stop_after_grok is not None and not bool(self.active.item()):
            log.info("all seeds grokked; stopping at update %d", int(rows[-1][0, 0]))
            return True
        return False


def _task_on(task: Task, device: torch.device) -> Task:
    """A copy of ``task`` with its lookup tables on ``device`` (no copies inside a graph)."""
    task = copy.copy(task)
    for name, value in vars(task).items():
        if isinstance(value, Tensor):
            setattr(task, name, value.to(device))
    return task


def _pool_tables(sampler: PoolSampler, tc: TrainConfig) -> tuple[Tensor | None, Tensor | None, int]:
    """Pool sizes as device tables: by update for the time-paced schedules (steps, S), by
    number of advances for ``step`` (advances + 1, S) with the most advances it can make."""
    cfg, members = tc.curriculum, sampler.members
    device = sampler.order.device
    if cfg.pacing == "none":
        return None, None, 0
    if cfg.pacing != "step":
        paced = [[sampler.pool_size(s, t) for s in range(members)] for t in range(tc.steps)]
        return torch.tensor(paced, device=device), None, 0
    most = 0
    while cfg.start + most * cfg.step_size < 1.0:  # the sampler's own delta(advances) < 1
        most += 1
    table = []
    for a in range(most + 1):
        sampler.advances = [a] * members
        table.append([sampler.pool_size(s, 0) for s in range(members)])
    sampler.advances = [0] * members
    return None, torch.tensor(table, device=device), most

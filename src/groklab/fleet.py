"""Several cells trained as one batched model: a fleet.

A cell's seeds already train as one model, its members side by side along a leading
dimension (:mod:`groklab.models.layers`). A fleet stacks the members of several cells the
same way, so that one forward and one backward pass serve them all: on a GPU, where a small
model's update is launch-bound, a fleet of 40 cells costs about what one cell does.

Each cell keeps everything that makes it itself: its task and splits, its parameters, its
optimiser (kind, learning rate, weight decay, betas, warm-up) and gradient filter, its
batch sampler (curriculum pool) and augmentation with their generators, its evaluation, its
history and its stop rule. Each update concatenates the cells' parameters along the member
dimension, runs the shared architecture on the concatenated batch, and the backward pass
hands each cell the gradient of its own slice (a member's loss depends on its own weights
only); then every cell takes its own optimiser step. So a member trains exactly as it would
in its cell alone on the plain loop (:func:`groklab.train.train`, ``engine="loop"``): on a
CPU at the same thread count the tests find history, final metrics and weights byte-identical.

What the cells of one fleet must share is :func:`fleet_key`: the model and the task's
shapes, the batch size (for full batches, the training split's size), the number of updates,
the evaluation period, the loss and the device. Two kinds of cell train alone (key
``None``): one with dropout, which draws its masks from torch's global generator, so a
member's masks would depend on the cells beside it; and a one-seed cell, whose lone member
takes torch's fused LayerNorm kernel (:class:`groklab.models.layers.LayerNorm`), which
rounds differently from the members' path a fleet takes. Evaluation and the Fourier
progress measures run on each cell's own model, as in its own loop.

A fleet can resume where an interrupted one stopped: given a ``snapshot`` file,
:func:`train_fleet` saves every cell's whole state there (weights, optimiser and schedule,
gradient filter, generators, curriculum pool, history, measures, stop rule) after an
evaluation at most every ``snapshot_every`` seconds, and a later call with the same cells,
seeds, code (:func:`source_digest`), torch version and thread count continues from it; the
members come out byte-identical to an uninterrupted run. A snapshot from anything else is
ignored. So a cell of 300,000 updates need not finish in one sitting.

The per-cell bookkeeping below repeats :func:`groklab.train.train`'s loop body on purpose:
``train.py`` is a training dependency of every cell in ``dvc.yaml``, and changing it to
share this code would make DVC retrain every shipped result.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from groklab import rng
from groklab.augment import augment, get_augmentation
from groklab.cells import EXPERIMENT, cell_config, experiment_source, stage_cell
from groklab.config import ConfigError, RunConfig
from groklab.curriculum import PoolSampler
from groklab.errors import Interrupted, TrainingDiverged
from groklab.fourier import Recorder
from groklab.gradients import build_gradient_transform
from groklab.losses import LOSSES, softmax_collapse
from groklab.models import BUILDERS, build_model
from groklab.optim import build_optimizer, build_schedule
from groklab.tasks import Task, build_task
from groklab.train import (
    GROK_THRESHOLD,
    Progress,
    TrainData,
    TrainResult,
    _done_after_grok,
    _result,
    clean_accuracy,
    diverged,
    evaluate,
    evaluate_examples,
    float32_matmuls,
    resolve_device,
)

log = logging.getLogger(__name__)


def _shapes(task: Task) -> tuple[int, int, int, int]:
    return task.vocab_size, task.seq_len, task.n_classes, task.prefix_len


def fleet_key(cfg: RunConfig, seeds: Sequence[int]) -> Hashable | None:
    """What cells must share to train in one fleet; ``None``: the cell trains alone."""
    if cfg.model.dropout > 0 or len(seeds) < 2:
        return None
    task = build_task(cfg.data, list(seeds))
    tc = cfg.train
    # Full batches are the whole training split: its size is the batch's.
    batch = tc.batch_size if tc.batch_size is not None else (
        "full", len(task.split(cfg.data.train_fraction, seeds[0]).train))
    return (cfg.model, _shapes(task), batch, tc.steps, tc.eval_every, tc.loss,
            resolve_device(tc.device), tc.matmul_precision)


def stage_fleet_key(params: Mapping[str, Any], stage: str) -> Hashable | None:
    """:func:`fleet_key` of a training stage; ``None`` also for a stage that trains no network
    of its own (a linear student-teacher cell, an ``experiment@`` cell at the paper defaults)."""
    cell = stage_cell(params, stage)
    config = cell_config(params, cell)
    if not isinstance(config, RunConfig) or (
            cell.family == EXPERIMENT and experiment_source(params, cell.task)):
        return None
    return fleet_key(config, list(params["seeds"]))


def group_fleets(keys: Sequence[Hashable | None], max_members: int | None = None,
                 members: Sequence[int] | None = None) -> list[list[int]]:
    """Indices of ``keys`` grouped into fleets, in first-appearance order: equal keys
    together, ``None`` alone, each fleet at most ``max_members`` members (``members[i]``:
    cell ``i``'s seed count) unless one cell alone has more."""
    sizes = list(members) if members is not None else [1] * len(keys)
    groups: dict[Hashable, list[list[int]]] = {}
    order: list[list[int]] = []
    for i, key in enumerate(keys):
        if key is None:
            order.append([i])
            continue
        fleets = groups.setdefault(key, [])
        if fleets and (max_members is None
                       or sum(sizes[j] for j in fleets[-1]) + sizes[i] <= max_members):
            fleets[-1].append(i)
            continue
        fleets.append([i])
        order.append(fleets[-1])
    return order


def passes(tokens: Sequence[Tensor], prefix_len: int, vocab: int) -> list[list[int]]:
    """The cells (indices of their token batches (S, B, T)) that can share one forward and
    backward pass this update: all of them, unless the model computes each distinct
    ``prefix_len``-token prefix of its batch once (the transformer's shared prefix,
    :class:`groklab.models.transformer.Transformer`). Then a member's sums run over the
    prefixes the whole batch holds, and float sums with extra (zero-gradient) rows round
    differently, so only cells whose batches hold the same set of prefixes share a pass."""
    if not prefix_len or len(tokens) == 1:
        return [list(range(len(tokens)))]
    present = []
    for t in tokens:
        key = t[..., 0]
        for i in range(1, prefix_len):
            key = key * vocab + t[..., i]
        mask = torch.zeros(vocab ** prefix_len, dtype=torch.bool, device=t.device)
        present.append(mask.index_fill_(0, key.flatten(), True))
    table = torch.stack(present).cpu().numpy()  # one read of the device per update
    groups: dict[bytes, list[int]] = {}
    for i, row in enumerate(table):
        groups.setdefault(row.tobytes(), []).append(i)
    return list(groups.values())


# A cell's evaluation: validation loss (S,) and correctness (S, N), the training-curve
# sample's per-example losses and correctness (S, M).
Evaluation = tuple[Tensor, Tensor, Tensor, Tensor]


class _Stacked(nn.Module):
    """Several cells' models as one, for evaluation: ``template`` run on their weights
    concatenated along the member dimension."""

    def __init__(self, template: nn.Module, weights: dict[str, Tensor]):
        super().__init__()
        self.template, self.weights = template, weights

    def forward(self, tokens: Tensor) -> Tensor:
        return functional_call(self.template, self.weights, (tokens,))


class _Cell:
    """One cell's share of a fleet: what :func:`groklab.train.train` holds for a cell."""

    def __init__(self, cfg: RunConfig, seeds: list[int], device: torch.device):
        tc = cfg.train
        if len(set(seeds)) != len(seeds) or not seeds:
            raise ConfigError(f"seeds={seeds}: give at least one seed, each once")
        if tc.batch_size is None and tc.curriculum.pacing != "none":
            raise ConfigError("a curriculum needs sampled batches; set train.batch_size")
        self.cfg, self.seeds = cfg, seeds
        self.task = build_task(cfg.data, seeds)
        self.aug = get_augmentation(tc.aug, self.task)
        self.data = TrainData(self.task, cfg, seeds, device, self.aug)
        self.model = build_model(cfg.model, self.task, seeds).to(device)
        self.params = dict(self.model.named_parameters())
        self.opt = build_optimizer(cfg.optim, self.model.parameters())
        self.transform = build_gradient_transform(cfg.optim, list(self.model.parameters()))
        self.schedule = build_schedule(cfg.optim, self.opt)
        self.gens = [rng.generator(s, "data", device) for s in seeds]
        self.sampler = PoolSampler(tc.curriculum, self.task, self.data.train_idx, seeds,
                                   tc.steps, self.gens)
        self.measure = None
        if Recorder.applies(cfg.data.task, self.model, tc.measures_every):
            self.measure = Recorder(self.task, self.data.train_idx, seeds, tc.measures_every,
                                    tc.eval_every, device)
        S = len(seeds)
        self.rows: list[Tensor] = []
        self.loss_sum = torch.zeros(S, device=device)
        self.acc_sum = torch.zeros(S, device=device)
        self.batches = 0
        self.grokked_at: list[int | None] = [None] * S
        self.steps_done = 0
        self.error: TrainingDiverged | None = None

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        """Tokens (S, B, T) and labels (S, B) of update ``step`` (1-based)."""
        idx = self.sampler.sample(step - 1, self.cfg.train.batch_size)
        data, task = self.data, self.task
        if not self.aug.active:
            return data.tokens[idx], data.labels[idx]
        ops = torch.stack([augment(task, data.operands[idx[s]], self.aug, self.gens[s])
                           for s in range(len(self.seeds))])
        return task.encode(ops), task.label(ops)

    def update(self, loss: Tensor, logits: Tensor, labels: Tensor) -> None:
        """The cell's optimiser step, after the fleet's backward pass filled its gradients."""
        if self.transform is not None:
            self.transform()
        self.opt.step()
        self.schedule.step()
        with torch.no_grad():
            self.loss_sum += loss.detach()
            self.acc_sum += (logits.argmax(-1) == labels).float().mean(1)
        self.batches += 1

    def record(self, step: int, evaluated: Evaluation | None = None) -> list[float]:
        """Evaluate (unless ``evaluated`` holds the cell's slice of a batched evaluation) and
        append a history row, as the plain loop does; validation accuracy per seed."""
        model, data, S = self.model, self.data, len(self.seeds)
        device = self.loss_sum.device
        if evaluated is None:
            val_loss, correct = evaluate(model, data.val_tokens, data.val_labels)
            tr_losses, tr_correct = evaluate_examples(model, data.curve_tokens,
                                                      data.curve_labels)
        else:
            val_loss, correct, tr_losses, tr_correct = evaluated
        clean_acc = clean_accuracy(correct, data.val_reachable)
        tr_loss = tr_losses.mean(1)
        if self.batches:
            b_loss, b_acc = self.loss_sum / self.batches, self.acc_sum / self.batches
        else:
            b_loss = b_acc = torch.full((S,), float("nan"), device=device)
        lr = torch.full((S,), self.opt.param_groups[0]["lr"], device=device)
        stepcol = torch.full((S,), float(step), device=device)
        row = torch.stack([stepcol, tr_loss, tr_correct.float().mean(1), b_loss, b_acc,
                           val_loss, correct.float().mean(1), clean_acc, lr,
                           softmax_collapse(tr_losses)], 1)
        self.rows.append(row)
        losses = [tr_loss, val_loss, *([b_loss] if self.batches else [])]
        bad = ~torch.isfinite(torch.stack(losses, 1)).all(1)
        if bad.any():
            raise diverged(self.cfg, step,
                           [self.seeds[i] for i in bad.nonzero().flatten().tolist()])
        if self.batches:
            self.sampler.observe(b_acc.tolist())
        self.loss_sum.zero_()
        self.acc_sum.zero_()
        self.batches = 0
        val_acc = row[:, 6].tolist()
        for i, acc in enumerate(val_acc):
            if self.grokked_at[i] is None and acc >= GROK_THRESHOLD:
                self.grokked_at[i] = step
        if self.measure is not None:
            self.measure(model, step, final=step == self.cfg.train.steps)
        self.steps_done = step
        return val_acc

    def state(self) -> dict[str, Any]:
        """Everything that carries from one update to the next, for a snapshot."""
        transform = self.transform
        return {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "schedule": self.schedule.state_dict(),
            "transform": None if transform is None else {
                group: getattr(transform, group) for group in _FILTER_STATE
                if hasattr(transform, group)},
            "generators": [g.get_state() for g in self.gens],
            "advances": list(self.sampler.advances),
            "measure": None if self.measure is None else {"rows": self.measure.rows,
                                                          "last": self.measure.last},
            "rows": self.rows, "loss_sum": self.loss_sum, "acc_sum": self.acc_sum,
            "batches": self.batches, "grokked_at": self.grokked_at,
            "steps_done": self.steps_done,
            "error": None if self.error is None else str(self.error),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`'s snapshot (tensors copied into the live ones, so the
        optimiser and filter keep pointing at the model's parameters)."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.schedule.load_state_dict(state["schedule"])
        if self.transform is not None:
            for group, saved in state["transform"].items():
                live = getattr(self.transform, group)
                for mine, theirs in zip(live if isinstance(live, list) else [live],
                                        saved if isinstance(saved, list) else [saved],
                                        strict=True):
                    mine.copy_(theirs)
        for gen, saved in zip(self.gens, state["generators"], strict=True):
            gen.set_state(saved)
        self.sampler.advances = list(state["advances"])
        if self.measure is not None:
            self.measure.rows, self.measure.last = state["measure"]["rows"], \
                state["measure"]["last"]
        self.rows = list(state["rows"])
        self.loss_sum.copy_(state["loss_sum"])
        self.acc_sum.copy_(state["acc_sum"])
        self.batches, self.steps_done = state["batches"], state["steps_done"]
        self.grokked_at = list(state["grokked_at"])
        self.error = None if state["error"] is None else TrainingDiverged(state["error"])

    def done(self, step: int) -> bool:
        """Whether the stop rule (``stop_after_grok``) ends the cell at ``step``."""
        return _done_after_grok(self.grokked_at, step, self.cfg.train.stop_after_grok)

    def result(self) -> TrainResult:
        return _result(self.cfg, self.seeds, self.rows, self.model, self.data, self.steps_done,
                       self.measure)


# A gradient transform's state (groklab.gradients.GradientTransform), by attribute.
_FILTER_STATE = ("seen", "ema", "ring", "total")


@dataclass
class FleetResult:
    """Per cell, in the order given: its result, or the error that ended it."""

    results: list[TrainResult | None]
    errors: list[TrainingDiverged | None]
    updates: int = 0  # updates the fleet ran (this call: after a resumed snapshot's)
    passes: int = 0  # forward-backward passes they took (cells split by prefix: more)
    resumed_from: int = 0  # the update a snapshot resumed it from (0: from the start)


def source_digest(module: str = "groklab.fleet") -> str:
    """SHA-256 of the source of ``module`` and of every groklab module it can import (read
    from the files, following ``import`` statements anywhere in them): a fleet's snapshot is
    only resumed by the code that wrote it."""
    root = Path(__file__).resolve().parent  # the groklab package

    def source_file(name: str) -> Path | None:
        """The file of module ``name`` (a package's ``__init__.py``); None: not a module."""
        parts = name.split(".")[1:]
        package = root.joinpath(*parts, "__init__.py")
        if package.is_file():
            return package
        module = root.joinpath(*parts[:-1], f"{parts[-1]}.py") if parts else None
        return module if module is not None and module.is_file() else None

    digest, seen, todo = hashlib.sha256(), set(), [module]
    while todo:
        name = todo.pop()
        path = source_file(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        source = path.read_bytes()
        digest.update(name.encode() + b"\0" + source + b"\0")
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.startswith("groklab")]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from this module's package upwards
                    up = package
                    for _ in range(node.level - 1):
                        up = up.rpartition(".")[0]
                    base = f"{up}.{base}" if base else up
                if base.split(".")[0] == "groklab":
                    todo += [base, *(f"{base}.{a.name}" for a in node.names)]  # submodules
    return digest.hexdigest()


def snapshot_identity(configs: Sequence[RunConfig], seeds: Sequence[int], exact: bool
                      ) -> dict[str, Any]:
    """What a snapshot must match to be resumed: the cells, seeds, path, code, torch and
    thread count (any of them can change what a member computes)."""
    return {"configs": [repr(dataclasses.asdict(c)) for c in configs], "seeds": list(seeds),
            "exact": exact, "code": source_digest(), "torch": str(torch.__version__),
            "threads": torch.get_num_threads()}


def snapshot_path(root: Path, configs: Sequence[RunConfig], seeds: Sequence[int]) -> Path:
    """Where the fleet of ``configs`` keeps its snapshot under ``root``: a file named by a
    hash of the cells and seeds (no name from the parameters reaches the path)."""
    text = repr(([repr(dataclasses.asdict(c)) for c in configs], list(seeds)))
    return root / f"{hashlib.sha256(text.encode()).hexdigest()[:24]}.pt"


def train_fleet(configs: Sequence[RunConfig], seeds: Sequence[int],
                progress: Callable[[Progress], None] | None = None,
                exact: bool | None = None, snapshot: Path | None = None,
                snapshot_every: float = 600.0) -> FleetResult:
    """Train the cells ``configs`` (one :func:`fleet_key`) as one fleet, each for ``seeds``.

    A cell whose loss stops being finite ends with its error while the others go on; a cell
    whose stop rule fires stops updating (and leaves the batch). ``progress`` gets every
    active member's validation accuracy at each evaluation. ``exact`` (default: on a CPU)
    splits each update into the passes :func:`passes` gives, so that every member computes
    bit for bit what it would alone; on a GPU, where batched kernels round by batch size
    anyway, one pass serves all (no extra passes, no read of the device per update).

    ``snapshot``: a file to save the fleet's state in after an evaluation, at most every
    ``snapshot_every`` seconds (0: at every evaluation), and to resume from when it holds
    a snapshot of these cells and this code (see the module's docstring). The caller
    removes it once the results are safe.
    """
    seeds = list(seeds)
    keys = {fleet_key(c, seeds) for c in configs}
    if len(keys) != 1 or None in keys:
        raise ConfigError("these cells cannot train as one fleet (groklab.fleet.fleet_key "
                          "differs, or one of them trains alone)")
    first = configs[0]
    device = resolve_device(first.train.device)
    if exact is None:
        exact = device.type == "cpu"
    with float32_matmuls(device, first.train.matmul_precision):
        return _train_fleet(configs, seeds, device, progress, exact, snapshot,
                            snapshot_every)


def _load_snapshot(path: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The snapshot at ``path`` if it is one of ``identity``'s fleet, else None."""
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a torn or foreign file: start afresh, say so
        log.warning("ignoring the unreadable snapshot %s: %s", path, err)
        return None
    if saved.get("identity") != identity:
        log.warning("ignoring the snapshot %s: it was saved by other cells, code, torch "
                    "version or thread count; training from the start", path)
        return None
    return saved


def _save_snapshot(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` whole or not at all (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def _train_fleet(configs: Sequence[RunConfig], seeds: list[int], device: torch.device,
                 progress: Callable[[Progress], None] | None, exact: bool,
                 snapshot: Path | None, snapshot_every: float) -> FleetResult:
    cells = [_Cell(cfg, seeds, device) for cfg in configs]
    first = configs[0]
    steps, eval_every = first.train.steps, first.train.eval_every
    loss_fn = LOSSES[first.train.loss]
    templates: dict[int, nn.Module] = {}

    def template(members: int) -> nn.Module:
        """The architecture for ``members`` members, without weights of its own."""
        if members not in templates:
            with torch.device("meta"):
                templates[members] = BUILDERS[first.model.arch](
                    members, first.model, cells[0].task).train()
        return templates[members]

    active = list(cells)
    model = cells[0].model  # the shared prefix: groklab.models.transformer.Transformer
    prefix_len = getattr(model, "prefix_len", 0) if getattr(model, "use_prefix", False) else 0
    vocab = cells[0].task.vocab_size

    def evaluate_together(group: list[_Cell]) -> list[Evaluation]:
        """One batched evaluation of cells whose splits have the same sizes (not bit for bit
        what each cell's own evaluation gives: the batch's prefixes differ)."""
        with torch.no_grad():
            weights = {name: torch.cat([c.params[name] for c in group])
                       for name in group[0].params}
        model = _Stacked(template(sum(len(c.seeds) for c in group)), weights)
        val_losses, correct = evaluate_examples(
            model, torch.cat([c.data.val_tokens for c in group]),
            torch.cat([c.data.val_labels for c in group]))
        tr_losses, tr_correct = evaluate_examples(
            model, torch.cat([c.data.curve_tokens for c in group]),
            torch.cat([c.data.curve_labels for c in group]))
        out, start = [], 0
        for cell in group:
            m = slice(start, start + len(cell.seeds))
            out.append((val_losses[m].mean(1), correct[m], tr_losses[m], tr_correct[m]))
            start = m.stop
        return out

    def evaluate_all(step: int) -> None:
        """Every active cell's evaluation; a cell that diverged or stopped leaves the fleet.
        Off the exact path, cells with splits of the same sizes are evaluated together."""
        evaluated: dict[int, Evaluation] = {}
        if not exact:
            groups: dict[tuple, list[_Cell]] = {}
            for cell in active:
                shapes = (cell.data.val_tokens.shape[1:], cell.data.curve_tokens.shape[1:])
                groups.setdefault(shapes, []).append(cell)
            for group in groups.values():
                if len(group) > 1:
                    evaluated.update(zip(map(id, group), evaluate_together(group), strict=True))
        accs: list[float] = []
        for cell in list(active):
            try:
                accs += cell.record(step, evaluated.get(id(cell)))
            except TrainingDiverged as err:
                cell.error = err
                active.remove(cell)
                continue
            if cell.done(step):
                log.info("a cell's seeds all grokked; it stops at update %d", step)
                active.remove(cell)
        if progress is not None and accs:
            progress(Progress(step, steps, accs))

    identity = snapshot_identity(configs, seeds, exact) if snapshot is not None else {}
    saved = _load_snapshot(snapshot, identity) if snapshot is not None else None
    last_saved = time.monotonic()

    def save(step: int) -> None:
        nonlocal last_saved
        if snapshot is None or time.monotonic() - last_saved < snapshot_every:
            return
        _save_snapshot(snapshot, {
            "identity": identity, "step": step,
            "active": [cells.index(c) for c in active],
            "cells": [c.state() for c in cells]})
        last_saved = time.monotonic()

    step = n_updates = n_passes = resumed_at = 0
    try:
        for cell in cells:
            cell.model.train()
        if saved is None:
            evaluate_all(0)
        else:
            for cell, state in zip(cells, saved["cells"], strict=True):
                cell.load_state(state)
            active[:] = [cells[i] for i in saved["active"]]
            resumed_at = step = saved["step"]
            log.info("resuming the fleet from its snapshot at update %d (%s)", step, snapshot)
        for step in range(resumed_at + 1, steps + 1):
            if not active:
                break
            batches = [cell.batch(step) for cell in active]
            for cell in active:
                cell.opt.zero_grad(set_to_none=True)
            outputs: dict[int, tuple[Tensor, Tensor]] = {}
            parts = passes([t for t, _ in batches], prefix_len if exact else 0, vocab)
            n_updates, n_passes = n_updates + 1, n_passes + len(parts)
            for part in parts:
                tokens = torch.cat([batches[i][0] for i in part])
                labels = torch.cat([batches[i][1] for i in part])
                weights = {name: torch.cat([active[i].params[name] for i in part])
                           for name in active[0].params}
                logits = functional_call(template(tokens.shape[0]), weights, (tokens,))
                loss = loss_fn(logits, labels).mean(1)  # (members,)
                loss.sum().backward()  # each cell's weights get its own slice's gradient
                start = 0
                for i in part:
                    members = slice(start, start + len(active[i].seeds))
                    outputs[i] = loss[members], logits[members]
                    start = members.stop
            for i, cell in enumerate(active):
                cell.update(*outputs[i], batches[i][1])
            if step % eval_every == 0 or step == steps:
                evaluate_all(step)
                save(step)
    except KeyboardInterrupt:
        raise Interrupted(step) from None
    return FleetResult([None if c.error else c.result() for c in cells],
                       [c.error for c in cells], n_updates, n_passes, resumed_at)

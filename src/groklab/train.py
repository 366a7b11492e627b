"""The training loop: every seed of a cell trained side by side as one batched model.

Data stay tensors on the device. Each update draws a batch per seed (with replacement,
from the seed's training split or curriculum pool), augments it if asked, and takes one
optimiser step for all seeds. Every ``eval_every`` updates the model is evaluated, in
evaluation mode, on the whole validation split and on the *training curve sample*: a
fixed, seed-drawn sample of ``curve_examples`` un-augmented training examples (the whole
split when it is smaller). That sample gives ``train_acc``/``train_loss``, the same
quantity in every cell whatever its augmentation, curriculum or dropout; the mean over the
batches as trained since the previous evaluation (the reference's convention) is kept as
``batch_acc``/``batch_loss``. Final metrics are measured on the whole splits.

On a GPU the same loop runs as CUDA graphs (:mod:`groklab.graphed`, chosen by ``engine``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from groklab import rng
from groklab.augment import Augmentation, augment, get_augmentation, reachable
from groklab.config import ConfigError, RunConfig
from groklab.curriculum import PoolSampler
from groklab.errors import Interrupted, TrainingDiverged
from groklab.fourier import Recorder
from groklab.gradients import build_gradient_transform
from groklab.losses import LOSSES, softmax_collapse
from groklab.models import build_model
from groklab.optim import build_optimizer, build_schedule
from groklab.tasks import Task, build_task, val_in_train

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

GROK_THRESHOLD = 0.99
HISTORY_COLUMNS = ("seed", "step", "train_loss", "train_acc", "batch_loss", "batch_acc",
                   "val_loss", "val_acc", "clean_val_acc", "lr", "softmax_collapse")
# softmax_collapse: share of the training-curve sample whose float32 softmax cross-entropy is
# exactly 0 (groklab.losses.softmax_collapse); last, so earlier columns keep their places.
# auto: CUDA graphs on a GPU, the plain loop on a CPU; loop: the plain loop anywhere;
# graph: the graphed step (captured on a GPU, eager on a CPU); graph_eager: never captured.
ENGINES = ("auto", "loop", "graph", "graph_eager")


@dataclass(frozen=True)
class Progress:
    """What a progress display needs after each evaluation."""

    step: int
    total: int
    val_acc: list[float]  # per seed


@dataclass
class TrainResult:
    config: RunConfig
    seeds: list[int]
    history: pd.DataFrame  # one row per (seed, evaluated step); columns HISTORY_COLUMNS
    final: pd.DataFrame  # one row per seed: final metrics on the whole splits, val_reachable
    model: nn.Module
    steps_done: int
    # per (seed, measured step): Fourier progress measures (groklab.fourier); None: not measured
    measures: pd.DataFrame | None = None


def diverged(cfg: RunConfig, step: int, which: list[int]) -> TrainingDiverged:
    """The error for seeds ``which`` whose loss was not finite at update ``step``."""
    return TrainingDiverged(
        f"loss became NaN/inf at update {step} for seed(s) {which} "
        f"(task {cfg.data.task}, optimizer {cfg.optim.kind} lr {cfg.optim.lr}); "
        "lower the learning rate or add warm-up"
    )


def note_first_update(device: torch.device) -> None:
    """Log (DEBUG) the seconds from ``GROKLAB_T0`` (a ``time.time()`` stamp a launcher
    sets) until the first update has run; the stage start-up benchmark reads it."""
    t0 = os.environ.get("GROKLAB_T0")
    if t0 is None:
        return
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    log.debug("first update done %.3f s after GROKLAB_T0", time.time() - float(t0))


def resolve_engine(engine: str, device: torch.device) -> str:
    """``auto`` is ``GROKLAB_ENGINE`` when set, else ``graph`` on CUDA and ``loop`` on CPU."""
    key = "engine"
    if engine == "auto" and os.environ.get("GROKLAB_ENGINE"):
        key, engine = "GROKLAB_ENGINE", os.environ["GROKLAB_ENGINE"]
    if engine not in ENGINES:
        raise ConfigError(f"{key}={engine!r} is not known; choose one of: {', '.join(ENGINES)}")
    if engine == "auto":
        return "graph" if device.type == "cuda" else "loop"
    return engine


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but no CUDA device is visible; use device='auto' or 'cpu'")
    return torch.device(name)


@torch.no_grad()
def evaluate(model: nn.Module, tokens: Tensor, labels: Tensor, chunk: int = 1024
             ) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy per member (S,) and per-example correctness (S, N).

    tokens (S, N, T) and labels (S, N) are evaluated in chunks of ``chunk`` examples
    (1024 measured fastest on a 2-core CPU: big enough for efficient matmuls, small
    enough to stay in cache).
    """
    losses, correct = evaluate_examples(model, tokens, labels, chunk)
    return losses.mean(1), correct


@torch.no_grad()
def evaluate_examples(model: nn.Module, tokens: Tensor, labels: Tensor, chunk: int = 1024
                      ) -> tuple[Tensor, Tensor]:
    """Per-example cross-entropy and correctness, both (S, N), in evaluation mode."""
    was_training = model.training
    model.eval()
    losses, correct = [], []
    for start in range(0, tokens.shape[1], chunk):
        logits = model(tokens[:, start:start + chunk])
        y = labels[:, start:start + chunk]
        losses.append(F.cross_entropy(logits.transpose(1, 2), y, reduction="none"))
        correct.append(logits.argmax(-1) == y)
    model.train(was_training)
    return torch.cat(losses, 1), torch.cat(correct, 1)


class TrainData:
    """Each seed's split of a task's equations, as (S, N) index and token tensors."""

    def __init__(self, task: Task, cfg: RunConfig, seeds: list[int], device: torch.device,
                 aug: Augmentation):
        splits = [task.split(cfg.data.train_fraction, s) for s in seeds]
        tokens = task.tokens
        self.val_in_train = [val_in_train(tokens, sp) for sp in splits]
        # The training curve sample: the same rows at every evaluation, drawn per seed.
        n_train = len(splits[0].train)
        m = min(n_train, cfg.train.curve_examples)
        curve = [sp.train[torch.randperm(n_train, generator=rng.generator(s, "train_curve"))[:m]]
                 for sp, s in zip(splits, seeds, strict=True)]
        self.curve_idx = torch.stack(curve).to(device)
        self.operands = task.operands.to(device)
        self.tokens = task.tokens.to(device)
        self.labels = task.labels.to(device)
        self.train_idx = torch.stack([s.train for s in splits]).to(device)
        self.val_idx = torch.stack([s.val for s in splits]).to(device)
        self.val_tokens = self.tokens[self.val_idx]
        self.val_labels = self.labels[self.val_idx]
        self.curve_tokens = self.tokens[self.curve_idx]
        self.curve_labels = self.labels[self.curve_idx]
        # Validation equations an augmented training example can equal, per seed.
        if aug.active:
            masks = [reachable(task, s.train, aug)[s.val] for s in splits]
        else:
            masks = [torch.zeros(len(s.val), dtype=torch.bool) for s in splits]
        self.val_reachable = torch.stack(masks).to(device)


@contextmanager
def float32_matmuls(device: torch.device, precision: str) -> Iterator[None]:
    """On CUDA, float32 matmuls at ``precision`` (``train.matmul_precision``) inside the
    block, restored after it; on a CPU nothing changes."""
    if device.type != "cuda":
        yield
        return
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def train(cfg: RunConfig, seeds: Sequence[int],
          progress: Callable[[Progress], None] | None = None,
          model_factory: Callable[[RunConfig], nn.Module] | None = None,
          engine: str = "auto") -> TrainResult:
    """Train one cell (``cfg``) for every seed in ``seeds`` and record its history.

    ``model_factory`` replaces :func:`groklab.models.build_model` (benchmarks use it to
    train the straightforward reference model through the same loop). ``engine`` is one
    of :data:`ENGINES`; the graphed engines draw batches and augmentation from a counter-
    based hash instead of torch generators, so their runs differ from the loop's in the
    random draws (not in what is computed).
    """
    with float32_matmuls(resolve_device(cfg.train.device), cfg.train.matmul_precision):
        return _train(cfg, seeds, progress, model_factory, engine)


def _train(cfg: RunConfig, seeds: Sequence[int],
           progress: Callable[[Progress], None] | None,
           model_factory: Callable[[RunConfig], nn.Module] | None,
           engine: str) -> TrainResult:
    seeds = list(seeds)
    if not seeds:
        raise ConfigError("seeds is empty; give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds={seeds} has repeats; each seed must appear once")
    tc = cfg.train
    if tc.batch_size is None and tc.curriculum.pacing != "none":
        raise ConfigError("a curriculum needs sampled batches; set train.batch_size")
    device = resolve_device(tc.device)
    engine = resolve_engine(engine, device)
    task = build_task(cfg.data, seeds)
    aug = get_augmentation(tc.aug, task)
    data = TrainData(task, cfg, seeds, device, aug)

    def new_model() -> nn.Module:
        return (model_factory(cfg) if model_factory else build_model(cfg.model, task, seeds)
                ).to(device)

    model = new_model()
    measure = None
    if Recorder.applies(cfg.data.task, model, tc.measures_every):
        measure = Recorder(task, data.train_idx, seeds, tc.measures_every, tc.eval_every, device)
    if engine != "loop":
        from groklab.graphed import CaptureError, GraphedLoop

        try:
            graphed = GraphedLoop(cfg, seeds, task, aug, data, model,
                                  capture=engine == "graph" and device.type == "cuda")
        except CaptureError as err:  # the warm-up may have moved the weights: start afresh
            log.warning("CUDA graph capture failed, training with the eager loop instead: %s",
                        err)
            model = new_model()
        else:
            try:
                graph_rows, steps_done = graphed.run(progress, measure)
            except KeyboardInterrupt:
                raise Interrupted(int(graphed.counter.item())) from None
            return _result(cfg, seeds, graph_rows, model, data, steps_done, measure)
    opt = build_optimizer(cfg.optim, model.parameters())
    transform = build_gradient_transform(cfg.optim, list(model.parameters()))
    loss_fn = LOSSES[tc.loss]
    schedule = build_schedule(cfg.optim, opt)
    gens = [rng.generator(s, "data", device) for s in seeds]
    sampler = PoolSampler(tc.curriculum, task, data.train_idx, seeds, tc.steps, gens)
    S = len(seeds)

    rows: list[Tensor] = []  # per evaluation: (S, 10) of step, metrics, lr, collapse
    train_loss_sum = torch.zeros(S, device=device)
    train_acc_sum = torch.zeros(S, device=device)
    batches = 0
    grokked_at = [None] * S

    def record(step: int) -> list[float]:
        nonlocal batches
        val_loss, correct = evaluate(model, data.val_tokens, data.val_labels)
        clean_acc = clean_accuracy(correct, data.val_reachable)
        tr_losses, tr_correct = evaluate_examples(model, data.curve_tokens, data.curve_labels)
        tr_loss = tr_losses.mean(1)
        if batches:
            b_loss, b_acc = train_loss_sum / batches, train_acc_sum / batches
        else:  # before the first update no batch has been trained on
            b_loss = b_acc = torch.full((S,), float("nan"), device=device)
        lr = torch.full((S,), opt.param_groups[0]["lr"], device=device)
        stepcol = torch.full((S,), float(step), device=device)
        row = torch.stack([stepcol, tr_loss, tr_correct.float().mean(1), b_loss, b_acc,
                           val_loss, correct.float().mean(1), clean_acc, lr,
                           softmax_collapse(tr_losses)], 1)
        rows.append(row)
        losses = [tr_loss, val_loss, *([b_loss] if batches else [])]
        bad = ~torch.isfinite(torch.stack(losses, 1)).all(1)
        if bad.any():
            raise diverged(cfg, step, [seeds[i] for i in bad.nonzero().flatten().tolist()])
        if batches:  # the step schedule advances on accuracy over its pool's batches
            sampler.observe(b_acc.tolist())
        train_loss_sum.zero_()
        train_acc_sum.zero_()
        batches = 0
        val_acc = row[:, 6].tolist()
        for i, acc in enumerate(val_acc):
            if grokked_at[i] is None and acc >= GROK_THRESHOLD:
                grokked_at[i] = step
        if measure is not None:
            measure(model, step, final=step == tc.steps)
        if progress is not None:
            progress(Progress(step, tc.steps, val_acc))
        return val_acc

    step = 0
    try:
        model.train()
        record(0)
        for step in range(1, tc.steps + 1):
            idx = sampler.sample(step - 1, tc.batch_size)  # (S, B)
            if aug.active:
                ops = torch.stack([augment(task, data.operands[idx[s]], aug, gens[s])
                                   for s in range(S)])
                tokens, labels = task.encode(ops), task.label(ops)
            else:
                tokens, labels = data.tokens[idx], data.labels[idx]
            logits = model(tokens)  # (S, B, C)
            loss = loss_fn(logits, labels).mean(1)  # (S,)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # members are independent: each gets its own gradient
            if transform is not None:
                transform()
            opt.step()
            schedule.step()
            with torch.no_grad():
                train_loss_sum += loss.detach()
                train_acc_sum += (logits.argmax(-1) == labels).float().mean(1)
            batches += 1
            if step == 1:
                note_first_update(device)
            if step % tc.eval_every == 0 or step == tc.steps:
                record(step)
                if _done_after_grok(grokked_at, step, tc.stop_after_grok):
                    log.info("all seeds grokked; stopping at update %d", step)
                    break
    except KeyboardInterrupt:
        raise Interrupted(step) from None

    return _result(cfg, seeds, rows, model, data, step, measure)


def _result(cfg: RunConfig, seeds: list[int], rows: list[Tensor], model: nn.Module,
            data: TrainData, steps_done: int, measure: Recorder | None = None) -> TrainResult:
    history = _history_frame(rows, seeds)
    final = _final_frame(model, data, seeds, history)
    measures = None
    if measure is not None:
        measure(model, steps_done, final=True)  # the checkpoint's weights (early stop too)
        measures = measure.frame()
    return TrainResult(cfg, seeds, history, final, model, steps_done, measures)


def _done_after_grok(grokked_at: list[int | None], step: int, extra: int | None) -> bool:
    """Whether every seed reached 0.99 and then trained ``extra`` more updates."""
    if extra is None or any(g is None for g in grokked_at):
        return False
    return step >= max(g for g in grokked_at if g is not None) + extra


def _history_frame(rows: list[Tensor], seeds: list[int]) -> pd.DataFrame:
    import pandas as pd  # here, not at import: start-up of every stage pays for imports

    table = torch.stack(rows, 1).cpu()  # (S, evals, len(HISTORY_COLUMNS) - 1)
    frames = []
    for i, seed in enumerate(seeds):
        df = pd.DataFrame(table[i].numpy(), columns=HISTORY_COLUMNS[1:])
        df.insert(0, "seed", seed)
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out["step"] = out["step"].astype(int)
    return out


def clean_accuracy(correct: Tensor, reachable: Tensor) -> Tensor:
    """Accuracy (S,) on the validation examples no augmented training example can equal;
    NaN for a member with no such example (there is nothing clean to score)."""
    clean = ~reachable
    return (correct & clean).sum(1) / clean.sum(1).float().where(clean.any(1), float("nan"))


def _final_frame(model: nn.Module, data: TrainData, seeds: list[int],
                 history: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    train_loss, train_correct = evaluate(model, data.tokens[data.train_idx],
                                         data.labels[data.train_idx])
    val_loss, val_correct = evaluate(model, data.val_tokens, data.val_labels)
    clean_acc = clean_accuracy(val_correct, data.val_reachable)
    out = pd.DataFrame({
        "seed": seeds,
        "final_train_loss": train_loss.cpu().numpy(),
        "final_train_acc": train_correct.float().mean(1).cpu().numpy(),
        "final_val_loss": val_loss.cpu().numpy(),
        "final_val_acc": val_correct.float().mean(1).cpu().numpy(),
        "final_clean_val_acc": clean_acc.cpu().numpy(),
        "val_reachable": data.val_reachable.float().mean(1).cpu().numpy(),
        "val_in_train": data.val_in_train,
        "n_train": data.train_idx.shape[1],
        "n_val": data.val_idx.shape[1],
    })
    return out

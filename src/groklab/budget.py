"""Peak memory of a run, estimated from its configuration before anything is built.

A run whose estimate exceeds the memory this machine has available is refused in one
line that names the key driving the largest part, before a table is built or an update
taken (the kernel would otherwise kill it, silently, minutes or hours later). The
estimate is deliberately on the high side (tests/test_budget.py measures it against real
tensors and a real process's peak); the machine's available memory is read from
``/proc/meminfo`` (``MemAvailable``).

``GROKLAB_MEMORY`` overrides what is available: a size (``64G``, ``512M``, bytes) or
``off`` to skip the check (e.g. when swap or another node's memory is meant to be used).

Importable without torch: a refusal costs no torch import.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from groklab.config import (
    ConfigError,
    DataConfig,
    LinearTeacherConfig,
    ModelConfig,
    RunConfig,
    n_classes,
    n_equations,
)

ENV = "GROKLAB_MEMORY"
INT64, FLOAT32, FLOAT64 = 8, 4, 8
EVAL_CHUNK = 1024  # examples per evaluation chunk (groklab.train.evaluate)
HISTORY_COLUMNS = 10  # groklab.train.HISTORY_COLUMNS, float64 in pandas
# What a training process holds besides its tensors: torch's and pandas' code and buffers
# (a process training the papers' Transformer at batch 512 grew 184 MiB after importing
# torch, of which the tensors below are 94 MiB).
RUNTIME = 256 * 2**20
# The key to name for each part of a network run's estimate.
PART_KEYS = {"tables": "data (p, operands, parity bits)", "model": "model sizes",
             "activations": "train.batch_size", "history": "train.steps / train.eval_every",
             "runtime": "the other runs on this machine"}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?", re.IGNORECASE)


def vocab_and_length(data: DataConfig) -> tuple[int, int]:
    """The task's vocabulary size and sequence length (groklab.tasks), without building it."""
    if data.task == "parity":
        return 2, data.parity_bits + data.concealed_bits
    k = data.operands if data.task == "multi_add" else 2
    length = 2 * k if data.encoding == "full" else k + 1
    vocab = (120 if data.task == "permutation" else data.p) + 2  # operands, op and "="
    return vocab, length


def param_count(model: ModelConfig, data: DataConfig) -> int:
    """Trainable parameters of one member (one seed) of ``model`` for ``data``'s task."""
    vocab, length = vocab_and_length(data)
    classes = n_classes(data)
    w = model.width

    def linear(a: int, b: int) -> int:
        return a * b + b

    if model.arch == "transformer":
        block = linear(w, 3 * w) + linear(w, w) + linear(w, 4 * w) + linear(4 * w, w) + 4 * w
        return vocab * w + length * w + model.layers * block + 2 * w + linear(w, classes)
    if model.arch == "mlp":
        sizes = [length * w] + [model.mlp_hidden] * model.mlp_layers
        return vocab * w + sum(linear(a, b) for a, b in zip(sizes, sizes[1:], strict=False)) \
            + linear(sizes[-1], classes)
    if model.arch == "lstm":
        h = model.lstm_hidden
        return vocab * w + w * 4 * h + h * 4 * h + 4 * h + linear(h, classes)
    return linear(length, model.bit_mlp_hidden) + linear(model.bit_mlp_hidden, classes)


def _activations_per_example(model: ModelConfig, data: DataConfig) -> int:
    """Floats the forward pass keeps per example for the backward pass (one member)."""
    _, t = vocab_and_length(data)
    w, classes = model.width, n_classes(data)
    if model.arch == "transformer":
        # per block: qkv 3w, attention output, projection, two LayerNorms w each, MLP 4w
        # before and after GELU, its output: 16 w per position; attention scores and
        # softmax (heads each) and the weighted values before their sum (w) per pair.
        block = 16 * t * w + t * t * (2 * model.heads + w)
        return 2 * t * w + model.layers * block + classes
    if model.arch == "mlp":
        return t * w + 2 * model.mlp_hidden * model.mlp_layers + classes
    if model.arch == "lstm":
        return t * w + t * 10 * model.lstm_hidden + classes
    return t + 2 * model.bit_mlp_hidden + classes


def table_bytes(data: DataConfig, n_seeds: int) -> int:
    """Bytes of the task's tables for ``n_seeds`` seeds: operands, tokens (and the sorted
    copies torch.unique makes of them), labels; per seed the split's indices and the
    validation tokens and labels (groklab.train.TrainData)."""
    n = n_equations(data) * (n_seeds if data.task == "parity" else 1)
    k = data.parity_bits + data.concealed_bits if data.task == "parity" else (
        data.operands if data.task == "multi_add" else 2)
    _, t = vocab_and_length(data)
    return INT64 * (n * (k + 4 * t + 2) + n_seeds * n * (t + 3))


def network_bytes(cfg: RunConfig, n_seeds: int) -> dict[str, int]:
    """Peak bytes of training ``cfg`` for ``n_seeds`` seeds side by side, by part."""
    data = cfg.data
    n = n_equations(data) * (n_seeds if data.task == "parity" else 1)
    _, t = vocab_and_length(data)
    tables = table_bytes(data, n_seeds)
    # weights, gradients and two optimizer moments per parameter
    model = FLOAT32 * 4 * param_count(cfg.model, data) * n_seeds
    batch = cfg.train.batch_size or int(n * data.train_fraction)
    per_example = _activations_per_example(cfg.model, data)
    # forward kept for backward, backward's gradients of the same size; evaluation chunks
    train_step = 2 * FLOAT32 * per_example * batch * n_seeds + INT64 * batch * n_seeds * t
    evaluation = FLOAT32 * per_example * min(EVAL_CHUNK, n) * n_seeds
    activations = max(train_step, evaluation)
    rows = (cfg.train.steps // cfg.train.eval_every + 2) * n_seeds
    history = FLOAT64 * HISTORY_COLUMNS * rows * 3  # the lists, the frame, the CSV write
    return {"tables": tables, "model": model, "activations": activations, "history": history,
            "runtime": RUNTIME}


def linear_bytes(cfg: LinearTeacherConfig) -> dict[str, int]:
    """Peak bytes of one seed of the closed-form linear student-teacher run, by part:
    inputs X and X @ V (n_train, d_in), the covariance, its eigenvectors and eigh's work
    space (d_in, d_in) each, and the curves over n_points time points."""
    d, n, t, o = cfg.d_in, cfg.n_train, cfg.n_points, cfg.d_out
    return {"inputs": FLOAT64 * 2 * n * d, "covariance": FLOAT64 * 3 * d * d,
            "curves": FLOAT64 * (d * t + 2 * d * t * o + 3 * n * t * o)}


def available_bytes() -> int | None:
    """Memory this run may use: ``GROKLAB_MEMORY`` when set, else the kernel's MemAvailable;
    None when the check is off or nothing says."""
    text = os.environ.get(ENV, "").strip()
    if text.lower() == "off":
        return None
    if text:
        return parse_size(text)
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    match = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.MULTILINE)
    return int(match[1]) * 1024 if match else None


def parse_size(text: str) -> int:
    """``64G``, ``512M``, ``1.5T``, ``1000`` (binary units) as bytes; one line otherwise."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ConfigError(f"{ENV}={text!r} is not a size: use e.g. 64G, 512M, a number of "
                          "bytes, or off")
    unit = "KMGT".find(match[2].upper()) + 1 if match[2] else 0
    return int(float(match[1]) * 1024**unit)


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


def check_memory(parts: Mapping[str, int], what: str, keys: Mapping[str, str]) -> None:
    """Refuse (ConfigError) ``what`` when the sum of ``parts`` exceeds the available memory,
    naming the key of the largest part (``keys``) and the estimate."""
    need = sum(parts.values())
    have = available_bytes()
    if have is None or need <= have:
        return
    largest = max(parts, key=parts.__getitem__)
    shown = ", ".join(f"{name} {gib(b)}" for name, b in parts.items())
    raise ConfigError(f"{what} would need about {gib(need)} ({shown}), more than the "
                      f"{gib(have)} available; lower {keys.get(largest, largest)}, or set "
                      f"{ENV}=<size>|off to override")


def check_run_memory(config: RunConfig | LinearTeacherConfig, n_seeds: int, what: str) -> None:
    """:func:`check_memory` for a network run of ``n_seeds`` seeds or a linear one."""
    if isinstance(config, RunConfig):
        check_memory(network_bytes(config, n_seeds), what, PART_KEYS)
    else:  # the linear seeds run one after another
        check_memory(linear_bytes(config), what,
                     {"inputs": "d_in / lam", "covariance": "d_in",
                      "curves": "n_points, d_in, d_out"})

"""The memory estimate against real tensors and a real process's peak, and the refusals it
and the bounds give, before anything is built."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from groklab.augment import get_augmentation
from groklab.budget import (
    linear_bytes,
    network_bytes,
    param_count,
    parse_size,
    table_bytes,
)
from groklab.config import (
    ConfigError,
    DataConfig,
    LinearTeacherConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from groklab.models import build_model
from groklab.tasks import build_task
from groklab.train import TrainData

SMALL = {"x_plus_y": DataConfig(p=11), "x_div_y": DataConfig("x_div_y", p=13),
         "multi_add": DataConfig("multi_add", p=5, operands=3),
         "permutation": DataConfig("permutation"),
         "parity": DataConfig("parity", parity_bits=3, concealed_bits=4, parity_examples=100,
                              train_fraction=0.75)}


TOKEN_MODELS = [ModelConfig(layers=1, width=16, heads=2), ModelConfig(layers=3, width=24, heads=3),
                ModelConfig(arch="mlp", width=8, mlp_hidden=20, mlp_layers=3),
                ModelConfig(arch="lstm", width=8, lstm_hidden=5)]


@pytest.mark.parametrize("task, model", [(t, m) for t in SMALL for m in TOKEN_MODELS]
                         + [("parity", ModelConfig(arch="bit_mlp", bit_mlp_hidden=30))])
def test_parameter_count_is_what_torch_builds(task, model):
    """Oracle: torch's own count of the built model's parameters, per member."""
    data = SMALL[task]
    built = build_model(model, build_task(data, [0, 1]), [0, 1])
    assert param_count(model, data) * 2 == sum(p.numel() for p in built.parameters())


@pytest.mark.parametrize("task", list(SMALL))
def test_tables_bound_the_tensors_training_holds(task):
    """Oracle: the bytes of the task's and TrainData's tensors, as torch reports them; the
    estimate covers them and is not more than three times as much."""
    data, seeds = SMALL[task], [0, 1, 2]
    cfg = RunConfig(data=data, model=ModelConfig(arch="bit_mlp") if task == "parity"
                    else ModelConfig())
    built = build_task(data, seeds)
    held = TrainData(built, cfg, seeds, torch.device("cpu"), get_augmentation(cfg.train.aug, built))
    tensors = [built.operands, built.labels, built.tokens,
               *(v for v in vars(held).values() if isinstance(v, torch.Tensor))]
    real = sum(t.numel() * t.element_size() for t in tensors)
    assert real <= table_bytes(data, len(seeds)) <= 3 * real


PEAK = """
import re, sys, torch
from pathlib import Path
from groklab.config import RunConfig, DataConfig, ModelConfig, TrainConfig
from groklab.train import train

def status(key):
    return int(re.search(rf"^{key}:\\s+(\\d+) kB", Path("/proc/self/status").read_text(),
                         re.M)[1]) * 1024

torch.set_num_threads(1)
cfg = RunConfig(data=DataConfig(p=97), model=ModelConfig(width=128, heads=4),
                train=TrainConfig(steps=2, batch_size=int(sys.argv[1]), eval_every=1))
Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
before = status("VmRSS")
train(cfg, [0])
print(before, status("VmHWM"))
"""


@pytest.mark.parametrize("batch", [512, 4096])
def test_the_estimate_covers_a_real_runs_peak(batch):
    """Oracle: the peak resident memory (VmHWM, reset after the imports) of a real process
    training two updates of the papers' Transformer, above what it held before training.
    The estimate must cover it (a refusal that lets a run through is no guard) and be
    within 4x (one that refuses what fits is no use either)."""
    proc = subprocess.run([sys.executable, "-c", PEAK, str(batch)], capture_output=True,
                          text=True, timeout=120, check=True)
    before, after = map(int, proc.stdout.split())
    cfg = RunConfig(train=TrainConfig(steps=2, batch_size=batch, eval_every=1))
    parts = network_bytes(cfg, 1)
    grown = after - before
    assert grown <= sum(parts.values()) <= 4 * grown, (grown, parts)


def test_linear_model_estimate_covers_its_arrays():
    """Oracle: the float64 arrays closed_form holds at once, sized by hand: X and X @ V
    (n_train x d_in), X^T X, V and eigh's work space (d_in x d_in)."""
    cfg = LinearTeacherConfig(d_in=100, lam=0.5, n_points=50)  # n_train 200
    parts = linear_bytes(cfg)
    assert parts["inputs"] == 8 * 2 * 200 * 100
    assert parts["covariance"] == 8 * 3 * 100 * 100


@pytest.mark.parametrize("text, size", [("64G", 64 * 2**30), ("512M", 512 * 2**20),
                                        ("1.5T", int(1.5 * 2**40)), ("1000", 1000),
                                        ("2GiB", 2 * 2**30)])
def test_memory_override_sizes(text, size):
    assert parse_size(text) == size


def test_a_bad_memory_override_is_one_line():
    with pytest.raises(ConfigError, match="GROKLAB_MEMORY='lots' is not a size"):
        parse_size("lots")

"""Models: the fast Transformer against the straightforward reference, shapes, members."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from groklab.checkpoint import checkpoint, load_model
from groklab.config import ARCHITECTURES, DataConfig, ModelConfig, OptimConfig, RunConfig
from groklab.models import BUILDERS, build_model
from groklab.models.reference import ReferenceTransformer
from groklab.models.transformer import attend
from groklab.optim import build_optimizer
from groklab.tasks import build_task


def batch(task, n, members=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shape = (n,) if members is None else (members, n)
    idx = torch.randint(0, len(task), shape, generator=gen)
    return task.tokens[idx], task.labels[idx]


@pytest.mark.parametrize("task_cfg", [
    DataConfig(task="x_plus_y", p=31),
    DataConfig(task="x_div_y", p=31, encoding="compact"),
    DataConfig(task="multi_add", p=7, operands=3),
    DataConfig(task="permutation"),
])
@pytest.mark.parametrize("use_prefix", [True, False])
def test_fast_transformer_matches_reference_logits(task_cfg, use_prefix):
    task = build_task(task_cfg)
    model = build_model(ModelConfig(layers=3), task, [5, 6])
    model.use_prefix = use_prefix
    tokens, _ = batch(task, 200, members=2)
    fast = model(tokens)
    for s in range(2):
        ref = ReferenceTransformer(task.vocab_size, task.seq_len, task.n_classes, layers=3)
        ref.copy_from(model, s)
        assert_close(fast[s], ref(tokens[s]), atol=2e-5, rtol=1e-4)


def _attention_by_loops(q, k, v, heads):
    """Plain-Python causal attention: every (member, example, head, query) on its own."""
    S, B, Tq, d = q.shape
    Tk, hd = k.shape[2], d // heads
    out = torch.zeros_like(q)
    for s, b, h, i in itertools.product(range(S), range(B), range(heads), range(Tq)):
        cols = slice(h * hd, (h + 1) * hd)
        seen = range(Tk - Tq + i + 1)  # keys up to the query's own absolute position
        scores = [float(q[s, b, i, cols] @ k[s, b, j, cols]) / math.sqrt(hd) for j in seen]
        top = max(scores)
        weights = [math.exp(x - top) for x in scores]
        total = sum(weights)
        for j, w in zip(seen, weights, strict=True):
            out[s, b, i, cols] += w / total * v[s, b, j, cols]
    return out


@pytest.mark.parametrize(("Tq", "Tk"), [(4, 4), (1, 4), (2, 4), (3, 3)])
def test_attention_matches_plain_loops(Tq, Tk):
    gen = torch.Generator().manual_seed(Tq * 10 + Tk)
    q, k, v = (torch.randn(2, 3, t, 8, generator=gen, dtype=torch.float64)
               for t in (Tq, Tk, Tk))
    assert_close(attend(q, k, v, heads=2), _attention_by_loops(q, k, v, heads=2))


def test_fast_transformer_trains_like_reference():
    """A few AdamW updates of both formulations stay together within float tolerance."""
    task = build_task(DataConfig(task="x_plus_y", p=23))
    fast = build_model(ModelConfig(), task, [0])
    ref = ReferenceTransformer(task.vocab_size, task.seq_len, task.n_classes).copy_from(fast)
    opt_fast = build_optimizer(OptimConfig(), fast.parameters())
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=0.5)
    for step in range(5):
        tokens, labels = batch(task, 128, seed=step)
        for model, opt in ((fast, opt_fast), (ref, opt_ref)):
            logits = model(tokens)
            opt.zero_grad()
            F.cross_entropy(logits, labels).backward()
            opt.step()
    tokens, _ = batch(task, 300, seed=99)
    assert_close(fast(tokens), ref(tokens), atol=1e-4, rtol=1e-3)
    assert_close(fast.head.weight[0].T, ref.model[-1].weight, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch, task_cfg, classes", [
    ("transformer", DataConfig(task="x_plus_y", p=11), 11),
    ("mlp", DataConfig(task="x_div_y", p=11), 11),
    ("lstm", DataConfig(task="permutation"), 120),
    ("bit_mlp", DataConfig(task="parity", concealed_bits=5, parity_examples=64), 2),
    ("transformer", DataConfig(task="parity", concealed_bits=5, parity_examples=64), 2),
])
def test_every_architecture_maps_tokens_to_logits(arch, task_cfg, classes):
    task = build_task(task_cfg)
    model = build_model(ModelConfig(arch=arch), task, [0, 1, 2])
    tokens, _ = batch(task, 16, members=3)
    assert model(tokens).shape == (3, 16, classes)
    single = build_model(ModelConfig(arch=arch), task, [1])
    assert single(tokens[1]).shape == (16, classes)
    # member 1 of the ensemble starts from the weights the lone seed-1 model has
    assert_close(model(tokens)[1], single(tokens[1]), atol=1e-5, rtol=1e-5)


def test_checkpoint_round_trip(tmp_path):
    cfg = RunConfig().replace(data={"p": 13})
    task = build_task(cfg.data)
    model = build_model(cfg.model, task, [3, 4])
    torch.save(checkpoint(model, cfg, [3, 4], 1, step=7), tmp_path / "ck.pt")
    restored = load_model(torch.load(tmp_path / "ck.pt"))
    tokens, _ = batch(task, 20)
    assert_close(restored(tokens), model(tokens)[1])


def test_every_architecture_name_has_a_builder():
    """config names the architectures (checked without torch); models builds each one."""
    assert sorted(BUILDERS) == sorted(ARCHITECTURES)

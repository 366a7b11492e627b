"""Nanda et al.'s one-layer Transformer (arch transformer1) against a straightforward
every-position implementation written as their code is (per-head weights, causal mask)."""

import math

import torch
import torch.nn.functional as F

from groklab.config import DataConfig, ModelConfig
from groklab.models import build_model
from groklab.tasks import build_task


def straightforward(m, s: int, tokens: torch.Tensor, heads: int) -> torch.Tensor:
    """Member s of model m on tokens (B, T): every position, then the last one's logits."""
    W_E, W_pos = m.tok.weight[s], m.pos.weight[s]
    d = W_E.shape[1]
    hd = d // heads
    x = W_E[tokens] + W_pos[: tokens.shape[1]]  # (B, T, d)
    wq, wk, wv = m.w_qkv[s].split(d, dim=1)  # (d, d) each; head h: columns h*hd:(h+1)*hd
    T = tokens.shape[1]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    outs = []
    for h in range(heads):
        cols = slice(h * hd, (h + 1) * hd)
        q, k, v = x @ wq[:, cols], x @ wk[:, cols], x @ wv[:, cols]
        scores = (q @ k.transpose(1, 2)) / math.sqrt(hd)
        scores = scores.masked_fill(~mask, float("-inf"))
        outs.append(scores.softmax(-1) @ v)
    x = x + torch.cat(outs, -1) @ m.w_o[s]
    pre = x @ m.w_in[s] + m.b_in[s]
    x = x + F.relu(pre) @ m.w_out[s] + m.b_out[s]
    return (x @ m.w_u[s])[:, -1]


def model_and_task(seeds, p=13):
    task = build_task(DataConfig(task="x_plus_y", p=p, encoding="compact"), seeds)
    cfg = ModelConfig(arch="transformer1", width=32, heads=4, mlp_hidden=64)
    return build_model(cfg, task, seeds), task


def test_matches_the_every_position_model_for_each_member():
    model, task = model_and_task([0, 1])
    with torch.no_grad():  # non-zero biases, so they are exercised too
        model.b_in.normal_(generator=torch.Generator().manual_seed(5))
        model.b_out.normal_(generator=torch.Generator().manual_seed(6))
        tokens = task.tokens[:50]
        got = model(tokens.expand(2, *tokens.shape))
        for s in (0, 1):
            torch.testing.assert_close(got[s], straightforward(model, s, tokens, 4),
                                       rtol=1e-5, atol=1e-5)


def test_initialisation_as_their_code_and_seeded_per_member():
    model, _ = model_and_task([0, 1], p=97)
    d = 32
    assert abs(model.tok.weight[0].std().item() - d**-0.5) < 0.01
    assert abs(model.w_u[0].std().item() - (97 + 1) ** -0.5) < 0.01
    assert model.b_in.abs().sum() == 0 and model.b_out.abs().sum() == 0
    alone, _ = model_and_task([1], p=97)
    torch.testing.assert_close(alone.w_qkv[0], model.w_qkv[1])
    assert sorted(n for n, _ in model.named_parameters()) == sorted(
        ["tok.weight", "pos.weight", "w_qkv", "w_o", "w_in", "b_in", "w_out", "b_out", "w_u"])

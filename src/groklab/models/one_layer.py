"""Nanda et al.'s one-layer Transformer (``arch: transformer1``), the model whose Fourier
circuit for modular addition they reverse-engineered, and the Exploring Grokking paper's
simplified Transformer with one MLP layer.

As their code (progress-measures-paper): token and learned position embeddings, one block
``x = x + Attn(x); x = x + MLP(x)`` with causal multi-head attention without biases, a
ReLU MLP of width ``mlp`` with biases, no LayerNorm, an unembedding without bias, logits
read at the last position. Every weight starts N(0, 1) scaled: ``1/sqrt(width)`` for the
embeddings, attention and MLP weights, ``1/sqrt(p + 1)`` for the unembedding (their
``d_vocab``), biases at zero. Their unembedding also scores the ``=`` token; here it
scores the p answers only. Only the last position reaches the logits in one layer, so it
alone is computed past the keys and values (exact, not an approximation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from groklab.models.layers import Embedding, MemberModule, as_members, gather_rows


class ScaledEmbedding(Embedding):
    """S lookup tables with N(0, scale²) init."""

    def __init__(self, members: int, num: int, dim: int, scale: float):
        super().__init__(members, num, dim)
        self.scale = scale

    def init_member(self, s: int, gen: torch.Generator) -> None:
        self.weight[s].normal_(generator=gen).mul_(self.scale)


class OneLayerTransformer(MemberModule):
    """int tokens (S, B, T) or (B, T) -> logits (S, B, C) (or (B, C) for one member)."""

    def __init__(self, members: int, vocab_size: int, seq_len: int, n_classes: int, *,
                 width: int = 128, heads: int = 4, mlp: int = 512):
        super().__init__()
        self.members, self.heads, self.n_classes = members, heads, n_classes
        S, d = members, width
        self.tok = ScaledEmbedding(S, vocab_size, d, d**-0.5)
        self.pos = ScaledEmbedding(S, seq_len, d, d**-0.5)
        self.w_qkv = nn.Parameter(torch.empty(S, d, 3 * d))  # heads side by side in each third
        self.w_o = nn.Parameter(torch.empty(S, d, d))
        self.w_in = nn.Parameter(torch.empty(S, d, mlp))
        self.b_in = nn.Parameter(torch.empty(S, 1, mlp))
        self.w_out = nn.Parameter(torch.empty(S, mlp, d))
        self.b_out = nn.Parameter(torch.empty(S, 1, d))
        self.w_u = nn.Parameter(torch.empty(S, d, n_classes))

    def init_member(self, s: int, gen: torch.Generator) -> None:
        d = self.w_o.shape[-1]
        for w in (self.w_qkv, self.w_o, self.w_in, self.w_out):
            w[s].normal_(generator=gen).mul_(d**-0.5)
        self.w_u[s].normal_(generator=gen).mul_((self.n_classes + 1) ** -0.5)
        self.b_in[s].zero_()
        self.b_out[s].zero_()

    def forward(self, tokens: Tensor) -> Tensor:
        tokens, squeeze = as_members(tokens, self.members)
        S, B, T = tokens.shape
        positions = torch.arange(T, device=tokens.device).expand(S, T)
        x = self.tok(tokens) + gather_rows(self.pos.weight, positions).unsqueeze(1)  # (S,B,T,d)
        d = x.shape[-1]
        hd = d // self.heads
        q, k, v = torch.bmm(x.reshape(S, B * T, d), self.w_qkv).view(S, B, T, 3, self.heads,
                                                                     hd).unbind(3)
        q = q[:, :, -1]  # (S, B, heads, hd): the last position sees every position
        scores = torch.einsum("sbhe,sbthe->sbht", q, k) / math.sqrt(hd)
        z = torch.einsum("sbht,sbthe->sbhe", scores.softmax(-1), v).reshape(S, B, d)
        h = x[:, :, -1] + torch.bmm(z, self.w_o)  # (S, B, d)
        h = h + torch.baddbmm(self.b_out, F.relu(torch.baddbmm(self.b_in, h, self.w_in)),
                              self.w_out)
        logits = torch.bmm(h, self.w_u)  # (S, B, C)
        return logits[0] if squeeze else logits

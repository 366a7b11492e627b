"""A single-layer LSTM reading the tokens left to right; the last hidden state is classified."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from groklab.models.layers import Embedding, Linear, MemberModule, as_members


class LSTMCell(MemberModule):
    """S LSTM cells with nn.LSTM's gate order (i, f, g, o) and U(+-1/sqrt(hidden)) init."""

    def __init__(self, members: int, fan_in: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.w_ih = nn.Parameter(torch.empty(members, fan_in, 4 * hidden))
        self.w_hh = nn.Parameter(torch.empty(members, hidden, 4 * hidden))
        self.bias = nn.Parameter(torch.empty(members, 1, 4 * hidden))  # b_ih + b_hh

    def init_member(self, s: int, gen: torch.Generator) -> None:
        bound = 1.0 / math.sqrt(self.hidden)
        for p in (self.w_ih, self.w_hh, self.bias):
            p[s].uniform_(-bound, bound, generator=gen)

    def forward(self, x: Tensor) -> Tensor:
        """x (S, B, T, fan_in) -> last hidden state (S, B, hidden)."""
        S, B, T, _ = x.shape
        gates_x = torch.baddbmm(self.bias, x.reshape(S, B * T, -1), self.w_ih).view(S, B, T, -1)
        h = x.new_zeros(S, B, self.hidden)
        c = x.new_zeros(S, B, self.hidden)
        for t in range(T):
            i, f, g, o = (gates_x[:, :, t] + torch.bmm(h, self.w_hh)).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        return h


class LSTM(nn.Module):
    """int tokens (S, B, T) -> logits (S, B, C)."""

    def __init__(self, members: int, vocab_size: int, n_classes: int, *, width: int = 128,
                 hidden: int = 20):
        super().__init__()
        self.members = members
        self.tok = Embedding(members, vocab_size, width)
        self.cell = LSTMCell(members, width, hidden)
        self.head = Linear(members, hidden, n_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        tokens, squeeze = as_members(tokens, self.members)
        logits = self.head(self.cell(self.tok(tokens)))
        return logits[0] if squeeze else logits

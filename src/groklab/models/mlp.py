"""Multi-layer perceptrons: on token embeddings (modular tasks) and on bit vectors (parity)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from groklab.models.layers import Embedding, Linear, as_members


class MLP(nn.Module):
    """Embeddings of all tokens concatenated, ``layers`` ReLU hidden layers, a linear head.

    The op and ``=`` tokens are constant, so concatenating every position equals
    concatenating the operands plus a learned bias. int tokens (S, B, T) -> (S, B, C).
    """

    def __init__(self, members: int, vocab_size: int, seq_len: int, n_classes: int, *,
                 width: int = 128, hidden: int = 512, layers: int = 2, dropout: float = 0.0):
        super().__init__()
        self.members, self.dropout = members, dropout
        self.tok = Embedding(members, vocab_size, width)
        sizes = [seq_len * width] + [hidden] * layers
        self.hidden = nn.ModuleList(Linear(members, a, b) for a, b in zip(sizes, sizes[1:],
                                                                          strict=False))
        self.head = Linear(members, sizes[-1], n_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        tokens, squeeze = as_members(tokens, self.members)
        h = self.tok(tokens).flatten(-2)  # (S, B, T*width)
        for layer in self.hidden:
            h = F.dropout(F.relu(layer(h)), self.dropout, self.training)
        logits = self.head(h)
        return logits[0] if squeeze else logits


class BitMLP(nn.Module):
    """Seed 004's parity model: bits (S, B, n) as a 0/1 vector -> one ReLU hidden layer -> C."""

    def __init__(self, members: int, n_bits: int, n_classes: int = 2, *, hidden: int = 1000,
                 dropout: float = 0.0):
        super().__init__()
        self.members, self.dropout = members, dropout
        self.fc = Linear(members, n_bits, hidden)
        self.head = Linear(members, hidden, n_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        tokens, squeeze = as_members(tokens, self.members)
        h = F.dropout(F.relu(self.fc(tokens.float())), self.dropout, self.training)
        logits = self.head(h)
        return logits[0] if squeeze else logits

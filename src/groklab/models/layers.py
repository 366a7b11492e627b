"""Layers holding S independent members side by side (an ensemble over a leading dim).

Every parameter has a leading member dimension ``S``; activations are ``(S, ..., features)``.
Training the seeds of a cell as one model this way keeps per-member optimiser state
(Adam and SGD act elementwise) and lets one batched matmul replace S small ones.
Each member is initialised from its own generator, so member ``s`` of an ensemble starts
from exactly the weights a lone model with the same seed would.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MemberModule(nn.Module):
    """A module whose parameters are initialised one member at a time."""

    def init_member(self, s: int, gen: torch.Generator) -> None:
        raise NotImplementedError


def init_members(model: nn.Module, generators: list[torch.Generator]) -> None:
    """Initialise member ``s`` of every layer from ``generators[s]``, in registration order."""
    with torch.no_grad():
        for s, gen in enumerate(generators):
            for module in model.modules():
                if isinstance(module, MemberModule):
                    module.init_member(s, gen)


class Linear(MemberModule):
    """S linear maps ``(S, ..., fan_in) -> (S, ..., fan_out)``; weights stored ``(S, in, out)``.

    ``init`` is ``"torch"`` (nn.Linear's U(+-1/sqrt(fan_in)) for weight and bias) or
    ``"xavier"`` (nn.MultiheadAttention's in-projection: Xavier weight, zero bias).
    """

    def __init__(self, members: int, fan_in: int, fan_out: int, *, init: str = "torch",
                 zero_bias: bool = False):
        super().__init__()
        self.fan_in, self.fan_out, self.init, self.zero_bias = fan_in, fan_out, init, zero_bias
        self.weight = nn.Parameter(torch.empty(members, fan_in, fan_out))
        self.bias = nn.Parameter(torch.empty(members, 1, fan_out))

    def init_member(self, s: int, gen: torch.Generator) -> None:
        if self.init == "xavier":
            bound = math.sqrt(6.0 / (self.fan_in + self.fan_out))
        else:
            bound = 1.0 / math.sqrt(self.fan_in)
        self.weight[s].uniform_(-bound, bound, generator=gen)
        if self.zero_bias or self.init == "xavier":
            self.bias[s].zero_()
        else:
            self.bias[s].uniform_(-1.0 / math.sqrt(self.fan_in), 1.0 / math.sqrt(self.fan_in),
                                  generator=gen)

    def forward(self, x: Tensor, cols: slice | None = None) -> Tensor:
        """Apply the maps (or only their output columns ``cols``) to x (S, ..., fan_in)."""
        weight, bias = self.weight, self.bias
        if cols is not None:
            weight, bias = weight[..., cols], bias[..., cols]
        lead = x.shape[:-1]
        y = torch.baddbmm(bias, x.reshape(lead[0], -1, self.fan_in), weight)
        return y.view(*lead, weight.shape[-1])


class Embedding(MemberModule):
    """S lookup tables ``(S, num, dim)`` with N(0, 1) init, like nn.Embedding."""

    def __init__(self, members: int, num: int, dim: int):
        super().__init__()
        self.num, self.dim = num, dim
        self.weight = nn.Parameter(torch.empty(members, num, dim))

    def init_member(self, s: int, gen: torch.Generator) -> None:
        self.weight[s].normal_(generator=gen)

    def forward(self, idx: Tensor) -> Tensor:
        """Rows ``idx`` (S, ...) of each member's table -> (S, ..., dim)."""
        return gather_rows(self.weight, idx)


def gather_rows(table: Tensor, idx: Tensor) -> Tensor:
    """``out[s, ...] = table[s, idx[s, ...]]`` for table (S, N, *feat) and idx (S, ...).

    Implemented as one flat embedding lookup, whose backward is a dense scatter-add.
    """
    members, num = table.shape[:2]
    feat = table.shape[2:]
    offsets = torch.arange(members, device=idx.device).view(members, *[1] * (idx.dim() - 1))
    flat = F.embedding(idx + offsets * num, table.reshape(members * num, -1))
    return flat.view(*idx.shape, *feat)


class LayerNorm(MemberModule):
    """LayerNorm over the last dim with a per-member affine transform."""

    def __init__(self, members: int, dim: int, eps: float = 1e-5):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.empty(members, dim))
        self.bias = nn.Parameter(torch.empty(members, dim))

    def init_member(self, s: int, gen: torch.Generator) -> None:
        self.weight[s].fill_(1.0)
        self.bias[s].zero_()

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] == 1:  # one member: the fused affine kernel
            return F.layer_norm(x, (self.dim,), self.weight[0], self.bias[0], self.eps)
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (self.dim,)
        normed = F.layer_norm(x, (self.dim,), eps=self.eps)
        return torch.addcmul(self.bias.view(shape), normed, self.weight.view(shape))


def as_members(tokens: Tensor, members: int) -> tuple[Tensor, bool]:
    """Tokens (S, B, T) as given, or (B, T) broadcast to every member.

    Returns the (S, B, T) tokens and whether the caller gave one shared (B, T) batch to a
    single-member model, whose output is then squeezed to (B, C).
    """
    if tokens.dim() == 2:
        return tokens.unsqueeze(0).expand(members, *tokens.shape), members == 1
    if tokens.dim() != 3 or tokens.shape[0] != members:
        raise ValueError(
            f"tokens of shape {tuple(tokens.shape)}: expected (B, T) or ({members}, B, T)"
        )
    return tokens, False

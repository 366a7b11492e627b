"""Counter-based random numbers: a hash of (member key, update counter, element index).

The graphed training step (:mod:`groklab.graphed`) draws its batches and augmentation
from these instead of ``torch.Generator`` streams, because a draw that is a pure function
of its coordinates

* keeps "member s of a batched model trains as it would alone": member s's draws depend
  on its own key only, not on which other seeds share the model;
* is graph-safe with no generator state to register: the counter is a device tensor that
  the captured graph reads and advances, so replays draw fresh numbers;
* is the same on CPU and CUDA (integer arithmetic is exact), so the CPU tests of the step
  logic sample exactly what the GPU samples;
* costs one set of integer kernels for all members together (a CUDA generator per member
  would launch one kernel per member per draw).

Every value is an int64 tensor holding a number in [0, 2^32); multiplier constants are
below 2^31, so no product reaches 2^63 and int64 arithmetic never overflows.
"""

from __future__ import annotations

import torch
from torch import Tensor

MASK32 = 0xFFFFFFFF


def hash32(x: Tensor) -> Tensor:
    """A bijection of [0, 2^32) with good avalanche: two xor-shift-multiply rounds.

    The shifts and multipliers (0x21f0aaad, 0x735a2d97) are a two-round integer hash found
    by C. Wellons' "hash prospector" search; ``x`` is int64 with values in [0, 2^32).
    """
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & MASK32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & MASK32
    return x ^ (x >> 15)


class CounterRNG:
    """``width`` random 32-bit words per member and update, as a function of the counter.

    Word ``i`` of member ``s`` at update ``t`` is ``hash32(base[t, s] ^ lane[i])`` with
    ``base[t, s] = hash32(key[s] ^ hash32(t))`` (a table computed once) and
    ``lane[i] = hash32(i)``: distinct lanes give distinct words within an update, and
    ``draw`` costs an index, an xor and one hash on the device.
    """

    def __init__(self, keys: list[int], steps: int, width: int, device: torch.device):
        key = torch.tensor(keys, dtype=torch.int64) & MASK32
        t = torch.arange(max(steps, 1), dtype=torch.int64)
        self.base = hash32(key[None, :] ^ hash32(t)[:, None]).to(device)  # (steps, S)
        self.lanes = hash32(torch.arange(width, dtype=torch.int64)).to(device)  # (width,)

    def draw(self, counter: Tensor) -> Tensor:
        """Words (S, width) of update ``counter`` (a (1,) int64 device tensor)."""
        base = self.base.index_select(0, counter).view(-1, 1)  # (S, 1)
        return hash32(base ^ self.lanes)


def below(words: Tensor, n: Tensor) -> Tensor:
    """Integers in [0, n) from 32-bit words: ``(word * n) >> 32`` (Lemire's multiply-shift;
    its bias is under n / 2^32). ``n`` (< 2^31) broadcasts against ``words``."""
    return (words * n) >> 32


def bernoulli(words: Tensor, p: float) -> Tensor:
    """True with probability p (to within 2^-32) for each 32-bit word."""
    return words < int(round(p * 2**32))

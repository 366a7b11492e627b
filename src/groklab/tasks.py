"""The algorithmic tasks: every equation as tensors, labels, encodings and the split.

A task holds its operands as an ``(N, K)`` integer tensor (one row per equation) and
knows how to label, encode, validate and index any operand rows, so augmented examples
can be relabelled and located without per-example Python.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from groklab import rng
from groklab.config import NONZERO_DIVISOR, ConfigError, DataConfig

BINARY_MODULAR = ("x_plus_y", "x_minus_y", "x_div_y", "x_mul_y")


@dataclass(frozen=True)
class Split:
    """Indices (into the task's equations) of the training and validation examples."""

    train: Tensor  # (N_train,) int64
    val: Tensor  # (N_val,) int64


def split(n: int, train_fraction: float, seed: int) -> Split:
    """Shuffle ``range(n)`` with ``seed`` and cut it at ``floor(n * train_fraction)``."""
    perm = torch.randperm(n, generator=rng.generator(seed, "split"))
    return _cut(perm, train_fraction, n)


def _cut(perm: Tensor, train_fraction: float, n: int) -> Split:
    n_train = int(len(perm) * train_fraction)
    if n_train == 0 or n_train == len(perm):
        raise ConfigError(
            f"train_fraction={train_fraction} of {n} equations leaves an empty "
            f"{'training' if n_train == 0 else 'validation'} split; choose a fraction that "
            "keeps at least one equation on each side"
        )
    return Split(train=perm[:n_train].sort().values, val=perm[n_train:].sort().values)


def val_in_train(tokens: Tensor, sp: Split) -> float:
    """Fraction of validation examples whose input (token row) also occurs in training."""
    rows = torch.cat([tokens[sp.train], tokens[sp.val]])
    ids = torch.unique(rows, dim=0, return_inverse=True)[1]
    train_ids, val_ids = ids[: len(sp.train)], ids[len(sp.train):]
    return torch.isin(val_ids, train_ids).double().mean().item()


def encode_operands(ops: Tensor, op_token: int, eq_token: int, encoding: str) -> Tensor:
    """Tokens ``[x1, op, x2, ..., op, xK, =]`` (full) or ``[x1, ..., xK, =]`` (compact)."""
    eq = torch.full((*ops.shape[:-1], 1), eq_token, dtype=ops.dtype, device=ops.device)
    if encoding == "compact":
        return torch.cat([ops, eq], -1)
    op = torch.full_like(ops, op_token)
    interleaved = torch.stack([ops, op], -1).flatten(-2)  # x1, op, x2, op, ..., xK, op
    return torch.cat([interleaved[..., :-1], eq], -1)


class Task:
    """Base class: subclasses define the operand space, labels and token layout."""

    name: str
    n_classes: int
    vocab_size: int
    seq_len: int
    # How many leading token positions depend only on the first operand (causal models
    # can compute them once per distinct first operand).
    prefix_len: int
    operands: Tensor  # (N, K) every equation's operands
    labels: Tensor  # (N,)

    def label(self, ops: Tensor) -> Tensor:
        raise NotImplementedError

    def encode(self, ops: Tensor) -> Tensor:
        raise NotImplementedError

    def valid(self, ops: Tensor) -> Tensor:
        """Which operand rows are legal equations (all of them, unless overridden)."""
        return torch.ones(ops.shape[:-1], dtype=torch.bool, device=ops.device)

    def index(self, ops: Tensor) -> Tensor:
        """Row of ``self.operands`` holding each operand row (for leakage accounting)."""
        raise NotImplementedError(f"task {self.name} has no operand index")

    def reverse(self, ops: Tensor) -> Tensor:
        raise NotImplementedError(f"reversal is not defined for task {self.name}")

    def negate(self, ops: Tensor) -> Tensor:
        raise NotImplementedError(f"negation is not defined for task {self.name}")

    def split(self, train_fraction: float, seed: int) -> Split:
        """The seed's training and validation examples (indices into ``operands``)."""
        return split(len(self), train_fraction, seed)

    @property
    def tokens(self) -> Tensor:
        return self.encode(self.operands)

    def __len__(self) -> int:
        return self.operands.shape[0]


class ModularTask(Task):
    """x_plus_y, x_minus_y, x_div_y, x_mul_y and multi_add over Z_p.

    x_div_y and x_mul_y take b in [1, p): x_mul_y as Grokfast's code builds it (x in [0, p),
    y in [1, p), x·y mod p; p(p - 1) equations, so x = 0 is kept and y = 0 excluded).

    full encoding: ``[a, op, b, =]`` (``[x1, op, x2, op, ..., =]`` for multi_add), with
    operands as tokens ``0..p-1``, op ``p`` and ``=`` ``p+1``; compact: ``[a, b, =]``.
    """

    def __init__(self, name: str, p: int, encoding: str = "full", k: int = 2):
        self.name, self.p, self.encoding = name, p, encoding
        self.k = k if name == "multi_add" else 2
        self.n_classes = p
        self.vocab_size = p + 2
        self.op_token, self.eq_token = p, p + 1
        self.seq_len = (2 * self.k if encoding == "full" else self.k + 1)
        self.prefix_len = 2 if encoding == "full" else 1
        first = torch.arange(p)
        second = torch.arange(1, p) if name in NONZERO_DIVISOR else torch.arange(p)
        if self.k == 2:
            self.operands = torch.cartesian_prod(first, second)
        else:
            self.operands = torch.cartesian_prod(*[first] * self.k)
        # Modular inverses by Fermat's little theorem (p is prime for x_div_y).
        self.inverse = torch.tensor([pow(int(b), p - 2, p) if b else 0 for b in range(p)])
        self.labels = self.label(self.operands)

    def label(self, ops: Tensor) -> Tensor:
        a, b = ops[..., 0], ops[..., 1]
        if self.name == "x_plus_y":
            return (a + b) % self.p
        if self.name == "x_minus_y":
            return (a - b) % self.p
        if self.name == "x_div_y":
            return (a * self.inverse.to(ops.device)[b]) % self.p
        if self.name == "x_mul_y":
            return (a * b) % self.p
        return ops.sum(-1) % self.p  # multi_add

    def encode(self, ops: Tensor) -> Tensor:
        return encode_operands(ops, self.op_token, self.eq_token, self.encoding)

    def valid(self, ops: Tensor) -> Tensor:
        if self.name in NONZERO_DIVISOR:
            return ops[..., 1] != 0
        return super().valid(ops)

    def index(self, ops: Tensor) -> Tensor:
        if self.name in NONZERO_DIVISOR:
            return ops[..., 0] * (self.p - 1) + ops[..., 1] - 1
        idx = torch.zeros(ops.shape[:-1], dtype=torch.long, device=ops.device)
        for i in range(self.k):
            idx = idx * self.p + ops[..., i]
        return idx

    def reverse(self, ops: Tensor) -> Tensor:
        return ops.flip(-1)

    def negate(self, ops: Tensor) -> Tensor:
        if self.name in NONZERO_DIVISOR:  # (-a)/b, (-a)·b: only the first operand changes sign
            return torch.stack([(-ops[..., 0]) % self.p, ops[..., 1]], -1)
        return (-ops) % self.p


class PermutationTask(Task):
    """Composition in S_n (n=5: 120 elements): label(a, b) = a ∘ b, i.e. i -> a[b[i]].

    Elements are indexed in lexicographic order of their one-line notation.
    """

    def __init__(self, n: int = 5, encoding: str = "full"):
        self.name, self.encoding = "permutation", encoding
        perms = list(itertools.permutations(range(n)))
        self.perms = torch.tensor(perms)  # (m, n)
        m = len(perms)
        self.n_classes = m
        self.vocab_size = m + 2
        self.op_token, self.eq_token = m, m + 1
        self.seq_len = 4 if encoding == "full" else 3
        self.prefix_len = 2 if encoding == "full" else 1
        # Composition and inverse tables, computed once with tensor indexing: a
        # permutation's one-line notation read as a base-n number keys its index.
        digits = torch.tensor([n**j for j in reversed(range(n))])
        code_to_index = torch.full((n**n,), -1, dtype=torch.long)
        code_to_index[(self.perms * digits).sum(-1)] = torch.arange(m)
        composed = self.perms[:, None, :].expand(m, m, n).gather(
            2, self.perms[None, :, :].expand(m, m, n)
        )  # composed[a, b, i] = perms[a][perms[b][i]]
        self.table = code_to_index[(composed * digits).sum(-1)]  # (m, m)
        self.inverse = code_to_index[(self.perms.argsort(-1) * digits).sum(-1)]  # (m,)
        self.operands = torch.cartesian_prod(torch.arange(m), torch.arange(m))
        self.labels = self.label(self.operands)

    def label(self, ops: Tensor) -> Tensor:
        return self.table.to(ops.device)[ops[..., 0], ops[..., 1]]

    def encode(self, ops: Tensor) -> Tensor:
        return encode_operands(ops, self.op_token, self.eq_token, self.encoding)

    def index(self, ops: Tensor) -> Tensor:
        return ops[..., 0] * self.n_classes + ops[..., 1]

    def reverse(self, ops: Tensor) -> Tensor:
        return ops.flip(-1)

    def negate(self, ops: Tensor) -> Tensor:  # the group analogue of -x: the inverse
        return self.inverse.to(ops.device)[ops]


class ParityTask(Task):
    """Parity of the first ``k`` bits of a binary vector with ``n`` concealment bits.

    Each seed draws its own ``examples`` *distinct* vectors of ``k + n`` uniform bits (all
    ``2^(k+n)`` of them, in a seeded order, when there are fewer), so a validation input never
    also occurs in training. ``operands`` holds every seed's draw one block after another and
    :meth:`split` cuts the seed's own block. Tokens are the bits (vocab 2).
    """

    def __init__(self, k: int, n: int, examples: int, seeds: Sequence[int] = (0,)):
        self.name, self.k, self.n = "parity", k, n
        self.n_classes, self.vocab_size = 2, 2
        self.seq_len = k + n
        self.prefix_len = 0
        self.n_distinct = 2 ** (k + n)
        self.per_seed = min(examples, self.n_distinct)
        self.blocks: dict[int, int] = {}  # seed -> first row of its block
        draws = []
        for i, seed in enumerate(dict.fromkeys(seeds)):
            self.blocks[int(seed)] = i * self.per_seed
            draws.append(self._draw(int(seed)))
        self.operands = torch.cat(draws)
        self.labels = self.label(self.operands)

    def _draw(self, seed: int) -> Tensor:
        """``per_seed`` distinct vectors as bit rows (per_seed, k + n), in draw order."""
        gen = rng.generator(seed, "parity")
        bits = self.k + self.n
        if self.per_seed == self.n_distinct:
            codes = torch.randperm(self.n_distinct, generator=gen)
        else:  # rejection: redraw until enough distinct codes (few rounds: draws are sparse)
            seen: dict[int, None] = {}
            while len(seen) < self.per_seed:
                for c in _random_codes(bits, self.per_seed, gen).tolist():
                    seen.setdefault(c, None)
            codes = torch.tensor(list(seen)[: self.per_seed])
        shifts = torch.arange(bits - 1, -1, -1)
        return (codes[:, None] >> shifts) & 1

    def split(self, train_fraction: float, seed: int) -> Split:
        if seed not in self.blocks:
            raise ValueError(f"seed {seed} has no parity draw; built for {list(self.blocks)}")
        perm = torch.randperm(self.per_seed, generator=rng.generator(seed, "split"))
        return _cut(self.blocks[seed] + perm, train_fraction, self.per_seed)

    def label(self, ops: Tensor) -> Tensor:
        return ops[..., : self.k].sum(-1) % 2

    def encode(self, ops: Tensor) -> Tensor:
        return ops


def _random_codes(bits: int, count: int, gen: torch.Generator) -> Tensor:
    """``count`` uniform integers of ``bits`` bits (up to 62), as int64."""
    lo = torch.randint(0, 2 ** min(bits, 31), (count,), generator=gen)
    if bits <= 31:
        return lo
    hi = torch.randint(0, 2 ** (bits - 31), (count,), generator=gen)
    return (hi << 31) | lo


def build_task(cfg: DataConfig, seeds: Sequence[int] = (0,)) -> Task:
    """The task named by ``cfg.task`` with its equations generated.

    ``seeds`` matter only for parity, whose vectors each seed draws itself.
    """
    if cfg.task in BINARY_MODULAR or cfg.task == "multi_add":
        return ModularTask(cfg.task, cfg.p, cfg.encoding, cfg.operands)
    if cfg.task == "permutation":
        return PermutationTask(5, cfg.encoding)
    if cfg.task == "parity":
        return ParityTask(cfg.parity_bits, cfg.concealed_bits, cfg.parity_examples, seeds)
    raise AssertionError(cfg.task)  # DataConfig validated the name

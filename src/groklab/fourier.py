"""Fourier progress measures of modular addition and subtraction (Nanda et al., 2023).

Nanda et al. ("Progress measures for grokking via mechanistic interpretability") found that
a network learning ``c = a + b mod p`` embeds each number as a few rotations
``cos(w·a), sin(w·a)`` at *key frequencies* ``w = 2πk/p`` and computes logits
``ℓ(a, b, c) ≈ Σ_w cos(w(a + b − c))``. Its progress measures, per seed of a batched model:

* **frequency norms**: the norm of the number tokens' embedding (rows ``0..p-1``, an
  ``(p, d)`` matrix) along ``cos(2πk·x/p)`` and ``sin(2πk·x/p)`` together, for each
  frequency ``k = 1..p//2`` (the constant is left out);
* **key frequencies** (:data:`KEY_FACTOR`): the frequencies whose share of the embedding's
  non-constant Fourier power (norm²) is at least ``KEY_FACTOR`` times the equal share
  ``1/F``; a flat (random) spectrum has none, a sparse one has exactly its peaks;
* **Gini** of the frequency norms: 0 for a flat spectrum, ``1 − 1/F`` for a single peak;
* **restricted loss**: the loss over the whole input grid of the logits with everything
  removed but their mean and, for each key frequency, their components along
  ``cos(w·s)`` and ``sin(w·s)`` over the grid, where ``s = a ± b mod p`` is the combined
  operand (the label): low once the Fourier circuit alone solves the task;
* **excluded loss**: the loss on the training split of the logits with those key
  components removed (the mean kept): high once the training data are fit through the
  circuit rather than memorised;
* **squared weight norm**: the sum of squares of every parameter.

Nanda et al. project the last MLP layer's activations and map them through the fixed
neuron-to-logit weights, adding back the logits' mean. Projection over inputs commutes with
that linear map, so projecting the logits themselves gives the same restricted logits
apart from the skip path around the MLP, and works for any architecture with an embedding.
Their code scores the restricted loss on the test split; here it is the whole grid, whose
restricted logits depend only on ``s`` so every split gives nearly the same value.

Only x_plus_y and x_minus_y get these measures: their label is the sum (difference) of
two elements of the cyclic group Z_p, whose characters are the cosines and sines above, and
their equations cover the whole grid with each ``s`` equally often. x_div_y lives in the
multiplicative group (its Fourier basis is over discrete logarithms, not token indices);
permutation composes S5, which is not abelian (its circuit uses representations, Chughtai
et al. 2023); parity and multi_add's ``p^K`` grid are other problems.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    import pandas as pd

    from groklab.tasks import ModularTask

MEASURED_TASKS = ("x_plus_y", "x_minus_y")
# A frequency is key when its share of the embedding's Fourier power is at least this many
# times the equal share 1/F. At 2, at most F/2 frequencies can be key and a random
# embedding (each share within ~10% of 1/F at width 128) has none.
KEY_FACTOR = 2.0
MEASURE_COLUMNS = ("restricted_loss", "excluded_loss", "grid_loss", "gini",
                   "weight_norm_sq", "n_key")


def frequencies(p: int) -> list[int]:
    """The frequencies ``k`` of Z_p the measures use: 1..p//2."""
    return list(range(1, p // 2 + 1))


def fourier_basis(p: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Unit vectors ``cos(2πk·x/p)``, ``sin(2πk·x/p)`` for ``k = 1..p//2`` over ``x = 0..p-1``,
    interleaved: (2F, p). Orthonormal; with the constant ``1/sqrt(p)`` they span all of
    R^p. (For even p the sine at ``k = p/2`` is zero and stays a zero row.)"""
    x = torch.arange(p, dtype=dtype)
    rows = []
    for k in frequencies(p):
        for f in (torch.cos, torch.sin):
            v = f(2 * math.pi * k * x / p)
            v = v.where(v.abs() > 1e-9, torch.zeros((), dtype=dtype))
            norm = v.norm()
            rows.append(v / norm if norm > 0 else v)
    return torch.stack(rows)


def frequency_norms(embedding: Tensor) -> Tensor:
    """Norm of each frequency's cos and sin components of embeddings (S, p, d) -> (S, F)."""
    basis = fourier_basis(embedding.shape[1]).to(embedding.device)
    coef = torch.einsum("fx,sxd->sfd", basis, embedding.double())  # (S, 2F, d)
    power = coef.pow(2).sum(-1)  # (S, 2F)
    return power.view(power.shape[0], -1, 2).sum(-1).sqrt()


def key_frequencies(norms: Tensor, factor: float = KEY_FACTOR) -> Tensor:
    """Which frequencies are key (S, F) bool: power share >= ``factor`` / F (module doc)."""
    power = norms.double().pow(2)
    share = power / power.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    return share >= factor / norms.shape[-1]


def gini(values: Tensor) -> Tensor:
    """Gini coefficient of non-negative values along the last dim:
    ``Σ_i Σ_j |x_i − x_j| / (2 n² mean)``; 0 when all are equal, ``1 − 1/n`` for one peak."""
    x = values.double()
    n = x.shape[-1]
    diffs = (x.unsqueeze(-1) - x.unsqueeze(-2)).abs().sum((-1, -2))
    return diffs / (2 * n * n * x.mean(-1).clamp_min(torch.finfo(torch.float64).tiny))


def _key_components(level_means: Tensor, key: Tensor) -> Tensor:
    """The key frequencies' part of level-set means (S, p, C) along s -> (S, p, C)."""
    basis = fourier_basis(level_means.shape[1]).to(level_means.device)  # (2F, p)
    coef = torch.einsum("fx,sxc->sfc", basis, level_means)  # (S, 2F, C)
    keep = key.repeat_interleave(2, dim=-1).to(coef.dtype)  # (S, 2F): cos and sin
    return torch.einsum("fx,sfc->sxc", basis, coef * keep.unsqueeze(-1))


def logit_losses(logits: Tensor, labels: Tensor, key: Tensor, train_mask: Tensor
                 ) -> dict[str, Tensor]:
    """Restricted, excluded and whole-grid loss (each (S,)) of logits over the whole grid.

    logits (S, N, C): every one of the ``N = p²`` equations, whose label ``labels`` (N,) is
    the combined operand ``s``; key (S, F) bool; train_mask (S, N) bool: each seed's
    training split. Projections are over the grid: since each ``s`` occurs equally often,
    the component of the logits along ``cos(w·s)`` is that of their mean over each level
    set ``{(a, b): a ± b = s}``.
    """
    S, N, C = logits.shape
    logits = logits.double()
    counts = torch.bincount(labels, minlength=C)
    if counts.min() != counts.max() or counts.numel() != C:
        raise ValueError("logit_losses needs every label equally often (the whole grid)")
    level = torch.zeros(S, C, C, dtype=logits.dtype, device=logits.device)
    level.index_add_(1, labels, logits)
    level /= counts[0]  # (S, p, C): mean logits of each level set s
    key_part = _key_components(level, key)
    restricted = level.mean(1, keepdim=True) + key_part  # (S, p, C), a function of s
    s = torch.arange(C, device=logits.device)
    restricted_loss = F.cross_entropy(restricted.transpose(1, 2), s.expand(S, C),
                                      reduction="none").mean(1)
    excluded = logits - key_part[:, labels]  # (S, N, C)
    ex = F.cross_entropy(excluded.transpose(1, 2), labels.expand(S, N), reduction="none")
    mask = train_mask.to(ex.dtype)
    excluded_loss = (ex * mask).sum(1) / mask.sum(1)
    grid = F.cross_entropy(logits.transpose(1, 2), labels.expand(S, N), reduction="none")
    return {"restricted_loss": restricted_loss, "excluded_loss": excluded_loss,
            "grid_loss": grid.mean(1)}


def squared_weight_norm(model: nn.Module) -> Tensor:
    """Sum of squares of every parameter, per member (S,) (leading dim of each tensor)."""
    total = None
    for param in model.parameters():
        sq = param.detach().double().pow(2).flatten(1).sum(1)
        total = sq if total is None else total + sq
    if total is None:
        raise ValueError("the model has no parameters")
    return total


@dataclass(frozen=True)
class Measures:
    """The progress measures of one evaluation, per member."""

    norms: Tensor  # (S, F) embedding norm per frequency 1..p//2
    key: Tensor  # (S, F) bool
    values: dict[str, Tensor]  # MEASURE_COLUMNS -> (S,)

    def rows(self, step: int, seeds: list[int]) -> list[dict[str, float | int | str]]:
        """One plain row per seed: step, the measures, key frequencies, norm per frequency."""
        out = []
        for i, seed in enumerate(seeds):
            row: dict[str, float | int | str] = {"seed": seed, "step": step}
            row.update({k: float(self.values[k][i]) for k in MEASURE_COLUMNS})
            row["n_key"] = int(self.values["n_key"][i])
            keys = (self.key[i].nonzero().flatten() + 1).tolist()
            row["key_freqs"] = " ".join(str(k) for k in keys)
            row.update({f"freq_{k + 1}": float(v) for k, v in enumerate(self.norms[i])})
            out.append(row)
        return out


@torch.no_grad()
def progress_measures(model: nn.Module, tokens: Tensor, labels: Tensor, train_mask: Tensor,
                      p: int, chunk: int = 1024, factor: float = KEY_FACTOR) -> Measures:
    """Every measure of a batched model with token embedding ``model.tok`` (rows 0..p-1
    the numbers), on the whole grid ``tokens`` (N, T), ``labels`` (N,), in eval mode."""
    was_training = model.training
    model.eval()
    try:
        S = train_mask.shape[0]
        grid = tokens.unsqueeze(0).expand(S, *tokens.shape)
        logits = torch.cat([model(grid[:, i:i + chunk]) for i in range(0, grid.shape[1], chunk)],
                           1)
    finally:
        model.train(was_training)
    norms = frequency_norms(model.tok.weight[:, :p].detach())
    key = key_frequencies(norms, factor)
    values = logit_losses(logits, labels, key, train_mask)
    values["gini"] = gini(norms)
    values["weight_norm_sq"] = squared_weight_norm(model)
    values["n_key"] = key.sum(-1).double()
    return Measures(norms.cpu(), key.cpu(), {k: v.cpu() for k, v in values.items()})


class Recorder:
    """Measures a cell's model every ``every`` evaluations during training (and at its last
    update), for the seeds' splits; :meth:`frame` gives the rows for ``measures.csv``."""

    def __init__(self, task: ModularTask, train_idx: Tensor, seeds: list[int], every: int,
                 eval_every: int, device: torch.device):
        self.p, self.seeds = task.p, seeds
        self.period = every * eval_every  # updates between measures
        self.tokens = task.tokens.to(device)
        self.labels = task.labels.to(device)
        self.train_mask = torch.zeros(len(seeds), len(task), dtype=torch.bool, device=device)
        self.train_mask.scatter_(1, train_idx, True)
        self.rows: list[dict[str, float | int | str]] = []
        self.last: int | None = None

    @classmethod
    def applies(cls, task_name: str, model: nn.Module, every: int | None) -> bool:
        """Whether a cell gets measures: ``every`` set, a measured task, an embedding."""
        tok = getattr(model, "tok", None)
        return bool(every) and task_name in MEASURED_TASKS and isinstance(
            getattr(tok, "weight", None), Tensor)

    def due(self, step: int, final: bool = False) -> bool:
        """Whether ``step`` is measured: a multiple of the period, or ``final``, once."""
        return (final or step % self.period == 0) and step != self.last

    def __call__(self, model: nn.Module, step: int, final: bool = False) -> None:
        """Measure at ``step`` if it is due (:meth:`due`)."""
        if not self.due(step, final):
            return
        m = progress_measures(model, self.tokens, self.labels, self.train_mask, self.p)
        self.rows += m.rows(step, self.seeds)
        self.last = step

    def frame(self) -> pd.DataFrame:
        """The rows by seed (in the cell's seed order), then step, as history.csv."""
        import pandas as pd

        order = {seed: i for i, seed in enumerate(self.seeds)}
        rows = sorted(self.rows, key=lambda r: (order[r["seed"]], r["step"]))
        return pd.DataFrame(rows)

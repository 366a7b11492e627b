"""Solvable linear student-teacher model that groks (Levi, Beck & Bar-Sinai 2023).

Inputs ``x ~ N(0, I_{d_in})``; teacher ``y = T^T x`` with ``T_ij ~ N(0, 1/d_in)`` (so ``y`` has
unit variance); a linear student ``S`` is trained by full-batch gradient descent on
``n_train = round(d_in / lam)`` samples, from ``S0_ij ~ N(0, init_scale^2 / d_in)``
(``init_scale`` is the student/teacher norm ratio at initialisation; the default 0 starts
from ``S0 = 0``). The training objective is ``(1/n_train) sum_i ||S^T x_i - y_i||^2``, whose
gradient is ``2 Sigma D`` with ``D = S - T`` and ``Sigma = X^T X / n_train``. Hence discrete GD
gives ``D_n = (I - 2 lr Sigma)^n D0`` and gradient flow, with time measured in steps,
``D(n) = exp(-2 lr Sigma n) D0``.

Reported losses are per output: ``train_loss = Tr(D^T Sigma D) / d_out`` (the training MSE)
and ``val_loss = Tr(D^T D) / d_out`` (the expected MSE on fresh ``x``, as the test covariance
is ``I``). An (example, output) pair is *correct* when its squared error is below
``threshold``; for ``d_out = 1`` this is the per-example criterion of the paper, and for
``d_out > 1`` accuracies average over output components. ``train_acc`` counts the actual
training errors ``e_i = D^T x_i`` (exact, no approximation); ``val_acc`` uses that a test
error component ``e_j`` is ``N(0, (D^T D)_jj)``, so ``P(e_j^2 < eps) = erf(sqrt(eps / (2
(D^T D)_jj)))``.

Curves are recorded at integer steps ``0`` and a log-spaced grid on ``[1, steps]``; the
accuracies rise as S-shapes in ``log10(step)``, which is the axis to plot and fit them in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.special import erf

Curves = dict[str, np.ndarray]


@dataclass(frozen=True)
class LinearTeacherConfig:
    """One linear student-teacher run; defaults give S-shaped, delayed rises for lam in [0.5, 0.95].

    ``threshold = 1e-3`` is small compared with the initial per-example loss (~1), so both
    accuracies start near 0.02 and training accuracy is delayed (~400-750 steps) rather than
    immediate; ``steps = 100_000`` lets validation accuracy reach > 0.99 even at lam = 0.95.
    """

    d_in: int = 1000  # input dimension
    lam: float = 0.9  # d_in / n_train, in (0, 1)
    d_out: int = 1  # output dimension
    lr: float = 0.01  # GD learning rate eta, in (0, 0.25) so that GD is stable
    init_scale: float = 0.0  # student init std in units of 1/sqrt(d_in)
    threshold: float = 1e-3  # squared error below which an output counts as correct
    steps: int = 100_000  # horizon in GD steps
    n_points: int = 200  # at most this many recorded steps (0 plus a log-spaced grid)
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "d_in": (self.d_in >= 1, "an integer >= 1"),
            "lam": (0.0 < self.lam < 1.0, "in the open interval (0, 1)"),
            "d_out": (self.d_out >= 1, "an integer >= 1"),
            "lr": (0.0 < self.lr < 0.25, "in the open interval (0, 0.25)"),
            "init_scale": (self.init_scale >= 0.0, ">= 0"),
            "threshold": (self.threshold > 0.0, "> 0"),
            "steps": (self.steps >= 1, "an integer >= 1"),
            "n_points": (self.n_points >= 2, "an integer >= 2"),
            "seed": (self.seed >= 0, "an integer >= 0"),
        }
        for name, (ok, allowed) in checks.items():
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid; must be {allowed}")

    @property
    def n_train(self) -> int:
        """Number of training samples, ``round(d_in / lam)`` (at least ``d_in + 1``)."""
        return max(round(self.d_in / self.lam), self.d_in + 1)


def time_points(cfg: LinearTeacherConfig, steps: int | None = None) -> np.ndarray:
    """Distinct integer steps: 0 and ``n_points - 1`` log-spaced values on ``[1, steps]``."""
    horizon = cfg.steps if steps is None else steps
    grid = np.round(np.geomspace(1, horizon, cfg.n_points - 1))
    return np.unique(np.concatenate([[0.0], grid])).astype(np.int64)


def sample_problem(cfg: LinearTeacherConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The seed's training inputs ``X`` (n_train, d_in), teacher ``T`` and initial ``S0``."""
    rng = np.random.default_rng(cfg.seed)
    x = rng.standard_normal((cfg.n_train, cfg.d_in))
    teacher = rng.standard_normal((cfg.d_in, cfg.d_out)) / np.sqrt(cfg.d_in)
    student0 = cfg.init_scale * rng.standard_normal((cfg.d_in, cfg.d_out)) / np.sqrt(cfg.d_in)
    return x, teacher, student0


def _val_acc(per_output_var: np.ndarray, threshold: float) -> np.ndarray:
    """Mean over outputs of ``P(e^2 < threshold)`` for ``e ~ N(0, var)``; var shape (T, d_out)."""
    var = np.maximum(per_output_var, np.finfo(float).tiny)
    return erf(np.sqrt(threshold / (2.0 * var))).mean(axis=-1)


def closed_form(cfg: LinearTeacherConfig, steps: int | None = None) -> Curves:
    """Gradient-flow curves ``D(n) = exp(-2 lr Sigma n) D0``, exact via one eigendecomposition."""
    x, teacher, student0 = sample_problem(cfg)
    n = time_points(cfg, steps)
    mu, v = np.linalg.eigh(x.T @ x / cfg.n_train)
    mu = np.clip(mu, 0.0, None)
    d0 = v.T @ (student0 - teacher)  # (d_in, d_out), eigenbasis
    decay = np.exp(-2.0 * cfg.lr * np.outer(mu, n))  # (d_in, T)
    d_t = decay[:, :, None] * d0[:, None, :]  # (d_in, T, d_out), D(n) in the eigenbasis
    sq = d_t**2
    errors = (x @ v) @ d_t.reshape(cfg.d_in, -1)  # (n_train, T * d_out) training errors
    return {
        "step": n,
        "train_loss": np.einsum("k,ktj->t", mu, sq) / cfg.d_out,
        "val_loss": sq.sum(axis=(0, 2)) / cfg.d_out,
        "train_acc": (errors**2 < cfg.threshold).reshape(-1, n.size, cfg.d_out).mean(axis=(0, 2)),
        "val_acc": _val_acc(sq.sum(axis=0), cfg.threshold),
    }


def simulate(cfg: LinearTeacherConfig, steps: int | None = None) -> Curves:
    """Discrete full-batch GD ``S <- S - lr * 2 X^T (X S - Y) / n_train`` on the same sample.

    Records the same quantities as :func:`closed_form` at the same steps; costs
    ``O(steps * d_in^2 * d_out)``, so use a small ``d_in`` or horizon.
    """
    x, teacher, student = sample_problem(cfg)
    n = time_points(cfg, steps)
    gram = x.T @ x / cfg.n_train
    target = gram @ teacher  # X^T Y / n_train
    snaps = []
    for step in range(int(n[-1]) + 1):
        if step == n[len(snaps)]:
            snaps.append(student - teacher)
        if len(snaps) == len(n):
            break
        student = student - 2.0 * cfg.lr * (gram @ student - target)
    d_t = np.stack(snaps)  # (T, d_in, d_out)
    errors = x @ d_t  # (T, n_train, d_out)
    return {
        "step": n,
        "train_loss": (errors**2).mean(axis=(1, 2)),
        "val_loss": (d_t**2).sum(axis=(1, 2)) / cfg.d_out,
        "train_acc": (errors**2 < cfg.threshold).mean(axis=(1, 2)),
        "val_acc": _val_acc((d_t**2).sum(axis=1), cfg.threshold),
    }


def sweep(lams: Iterable[float], base_cfg: LinearTeacherConfig) -> list[tuple[float, Curves]]:
    """Closed-form curves for each ``lam``, all other settings taken from ``base_cfg``."""
    return [(float(lam), closed_form(dataclasses.replace(base_cfg, lam=lam))) for lam in lams]


def midpoint_step(step: np.ndarray, acc: np.ndarray, level: float = 0.5) -> float:
    """First step at which ``acc`` reaches ``level``, interpolated in log(step); NaN if never."""
    above = np.flatnonzero(acc >= level)
    if above.size == 0:
        return float("nan")
    i = int(above[0])
    if i == 0 or step[i - 1] <= 0:
        return float(step[i])
    logs = np.log([step[i - 1], step[i]])
    return float(np.exp(np.interp(level, [acc[i - 1], acc[i]], logs)))

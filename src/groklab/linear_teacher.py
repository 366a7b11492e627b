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
accuracies rise as S-shapes in ``log10(step)``, the axis to plot them on. The erf fits of the
sharpness paper (Eq. 4) are made in linear time, in updates, on a per-curve window
(:func:`fitting_domain`), so that relative gap and sharpness compare with the network studies.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import erf

from groklab.config import LinearTeacherConfig
from groklab.metrics import (
    Analysis,
    ErfFit,
    absolute_sharpness,
    aggregate,
    crossings,
    erf_params_for_chance,
    fit_erf,
    relative_gap,
    relative_sharpness,
)

Curves = dict[str, np.ndarray]


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


# --- The sweep's table and its erf-fit summary (the sharpness paper, Sec. 3.1) -----------

STUDY = "linear_teacher"
CURVE_COLUMNS = ("lam", "seed", "step", "train_acc", "val_acc", "train_loss", "val_loss")
GROK_LEVEL = 0.99  # accuracy that counts as reached (window end; `grokked`, `groks`)
FIT_WINDOW = 2.0  # the fit sees [0, FIT_WINDOW * step at which the curve reaches GROK_LEVEL]
FIT_POINTS = 400  # uniform resampling of that window
FIT_CHANCE = 0.0  # accuracy before learning: a = b = 0.5, the erf runs from 0 to 1
FIT_FIELDS = ("a", "s", "tau", "b", "r2", "ok", "reason")
SWEEP_METRICS = (
    "relative_gap", "relative_sharpness", "absolute_sharpness", "val_mid_step", "train_mid_step",
)
RUN_COLUMNS = (
    "study", "cell", "lam", "seed",
    *(f"{curve}_fit_{f}" for curve in ("train", "val") for f in FIT_FIELDS),
    "relative_gap", "relative_sharpness", "absolute_sharpness", "train_mid_step",
    "val_mid_step", "steps_to_99", "steps_to_99_train", "grokked", "groks", "final_train_acc",
    "final_val_acc",
)
CELL_COLUMNS = (
    "study", "cell", "lam", "n_seeds", "n_fit_ok", "frac_reached", "frac_groks",
    *(f"{m}_{k}" for m in SWEEP_METRICS for k in ("mean", "sd", "ci_low", "ci_high")),
)


def cell_name(lam: float) -> str:
    """The cell of a ``lam`` value in tables and metric keys, e.g. ``lam0.9``."""
    return f"lam{lam:g}"


def sweep_table(
    lams: Iterable[float], seeds: Iterable[int], base_cfg: LinearTeacherConfig
) -> pd.DataFrame:
    """Long table (:data:`CURVE_COLUMNS`) of closed-form curves for every (lam, seed).

    Each seed draws its own training inputs and teacher; all else comes from ``base_cfg``.
    """
    frames = []
    for lam in lams:
        for seed in seeds:
            c = closed_form(dataclasses.replace(base_cfg, lam=float(lam), seed=int(seed)))
            frame = pd.DataFrame({k: c[k] for k in CURVE_COLUMNS[2:]})
            frame.insert(0, "seed", int(seed))
            frame.insert(0, "lam", float(lam))
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=list(CURVE_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def fitting_domain(step: np.ndarray, acc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The curve resampled on :data:`FIT_POINTS` uniform steps of ``[0, FIT_WINDOW * t99]``.

    ``t99`` is the (log-interpolated) step at which ``acc`` first reaches :data:`GROK_LEVEL`;
    the window is cut at the last recorded step, and is the whole record when ``t99`` is
    undefined or 0. Values come from linear interpolation in ``step`` between records. A curve
    with non-finite values, or too short a record to span a window, is returned as recorded,
    so that :func:`groklab.metrics.fit_erf` reports why it cannot be fitted.
    """
    step, acc = np.asarray(step, dtype=float), np.asarray(acc, dtype=float)
    if step.size < 2 or not np.all(np.isfinite(acc)):
        return step, acc
    t99 = midpoint_step(step, acc, GROK_LEVEL)
    end = FIT_WINDOW * t99 if np.isfinite(t99) and t99 > 0 else step[-1]
    end = min(end, step[-1])
    if end <= step[0]:
        return step, acc
    grid = np.linspace(step[0], end, FIT_POINTS)
    return grid, np.interp(grid, step, acc)


def fit_curve(step: np.ndarray, acc: np.ndarray, min_r2: float = Analysis.min_fit_r2) -> ErfFit:
    """Erf fit ``acc = a * erf(s * (t - tau)) + b`` with ``a = b = 0.5`` on :func:`fitting_domain`.

    ``tau`` is in updates and ``s`` in 1/updates, as in the network studies; a fit with
    ``R^2 < min_r2`` is not ok.
    """
    a, b = erf_params_for_chance(FIT_CHANCE)
    return fit_erf(*fitting_domain(step, acc), a=a, b=b, min_r2=min_r2)


def summarize_curve(run: pd.DataFrame, budget: int | None = None,
                    analysis: Analysis = Analysis()) -> dict[str, object]:  # noqa: B008
    """Erf fits and crossings of ONE seed's curves (columns ``step``, ``train_acc``,
    ``val_acc``, ...; sorted by step), as in :func:`summarize_sweep`.

    The crossings are :func:`groklab.metrics.crossings` at :data:`GROK_LEVEL` on the recorded
    steps (censored at ``budget``, default the last recorded step, when never reached); the
    grok delay is in gradient-descent updates, like every other time here.
    """
    step = run["step"].to_numpy(dtype=float)
    train, val = run["train_acc"].to_numpy(dtype=float), run["val_acc"].to_numpy(dtype=float)
    fits = {"train_fit": fit_curve(step, train, analysis.min_fit_r2),
            "val_fit": fit_curve(step, val, analysis.min_fit_r2)}
    row: dict[str, object] = {}
    for prefix, fit in fits.items():
        row.update({f"{prefix}_{k}": v for k, v in fit.to_dict().items()})
    row["relative_gap"] = relative_gap(fits["train_fit"], fits["val_fit"])
    row["relative_sharpness"] = relative_sharpness(fits["train_fit"], fits["val_fit"])
    row["absolute_sharpness"] = absolute_sharpness(fits["val_fit"])
    row["train_mid_step"] = midpoint_step(step, train)
    row["val_mid_step"] = midpoint_step(step, val)
    horizon = int(step[-1]) if budget is None else budget
    row.update(crossings(step, train, val, budget=horizon, analysis=analysis,
                         threshold=GROK_LEVEL))
    row["final_train_acc"], row["final_val_acc"] = float(train[-1]), float(val[-1])
    return row


def _summarize_run(lam: float, seed: int, run: pd.DataFrame) -> dict[str, object]:
    row: dict[str, object] = {"study": STUDY, "cell": cell_name(lam), "lam": lam, "seed": seed}
    return row | {k: v for k, v in summarize_curve(run).items() if k in RUN_COLUMNS}


@dataclass
class SweepResult:
    """The curves of one λ for every seed, shaped like a trained network cell's outputs."""

    config: LinearTeacherConfig
    seeds: list[int]
    history: pd.DataFrame  # seed, step and HISTORY columns
    final: pd.DataFrame  # one row per seed: final accuracies and losses, n_train
    steps_done: int


HISTORY = ("train_loss", "train_acc", "val_loss", "val_acc")


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run NumPy's BLAS/LAPACK on one thread: each eigendecomposition is small, and threads
    that spin against concurrent stages made one 1000x1000 ``eigh`` 50x slower on 2 cores."""
    try:
        from threadpoolctl import threadpool_limits  # comes with mlflow (via scikit-learn)
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def run_cell(cfg: LinearTeacherConfig, seeds: list[int]) -> SweepResult:
    """Closed-form curves of ``cfg`` for every seed (each draws its own inputs and teacher)."""
    histories, finals = [], []
    for seed in seeds:
        with one_blas_thread():
            c = closed_form(dataclasses.replace(cfg, seed=int(seed)))
        frame = pd.DataFrame({"seed": int(seed), "step": c["step"],
                              **{k: c[k] for k in HISTORY}})
        histories.append(frame)
        finals.append({"seed": int(seed), **{f"final_{k}": float(c[k][-1]) for k in HISTORY},
                       "n_train": cfg.n_train})
    return SweepResult(cfg, list(seeds), pd.concat(histories, ignore_index=True),
                       pd.DataFrame(finals), int(cfg.steps))


def summarize_sweep(curves: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Erf-fit summary of a sweep's long curve table (:data:`CURVE_COLUMNS`): ``(runs, cells)``.

    ``runs`` has one row per (lam, seed) (:data:`RUN_COLUMNS`): erf fits of Eq. 4 of the
    sharpness paper to the train and validation accuracy with ``a = b = 0.5`` (chance 0),
    ``relative_gap = tau_val / tau_train - 1``, ``relative_sharpness = s_val / s_train``,
    ``absolute_sharpness = 2 a s_val / sqrt(pi)`` (the fitted validation curve's maximum
    slope), the 50% crossings ``*_mid_step`` interpolated from the data alone, ``grokked``
    (validation reaches 0.99), ``groks`` (it does so at least the grok delay after training)
    and the final accuracies. A failed fit keeps its row, with
    ``*_fit_ok = False``, its ``*_fit_reason``, and NaN for the metrics that need it.

    Fitting domain: like the paper, each curve is fitted against linear time in updates, on a
    domain of its own (:func:`fitting_domain`): uniform resampling of ``[0, 2 * t99]``, with
    ``t99`` the step at which that curve reaches 0.99. The curves are recorded on a log grid,
    whose points would otherwise weight the flat start most; a per-curve window resolves the
    fast training rise and the slow validation rise alike (their time scales differ ~35x at
    lam = 0.95), and extending it past ``t99`` lets the fit see the ceiling. With the default
    model (d_in = 1000) both fits reach R^2 > 0.95 for lam in [0.5, 0.95], and ``tau_val``
    lies within 4% of ``val_mid_step``; the training rise is more skewed in linear time, so
    ``tau_train`` may lie up to ~20% past ``train_mid_step``. For small d_in near lam = 1 some
    seeds' validation rises are skewed too, and ``tau_val`` can drift ~30% from the midpoint.

    ``cells`` has one row per lam (:data:`CELL_COLUMNS`): mean, sd and 95% interval over seeds
    (:func:`groklab.metrics.aggregate`; NaN, e.g. from failed fits, left out) of
    :data:`SWEEP_METRICS`, with ``n_seeds``, ``n_fit_ok`` (seeds with both fits ok),
    ``frac_reached`` and ``frac_groks``.
    """
    missing = [c for c in CURVE_COLUMNS if c not in curves.columns]
    if missing:
        raise ValueError(f"curves lack the columns {missing}; expected {list(CURVE_COLUMNS)}")
    rows = [
        _summarize_run(float(lam), int(seed), run.sort_values("step"))
        for (lam, seed), run in curves.groupby(["lam", "seed"], sort=True)
    ]
    runs = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    cells = []
    for lam, group in runs.groupby("lam", sort=True):
        cell: dict[str, object] = {"study": STUDY, "cell": cell_name(float(lam)), "lam": lam,
                                   "n_seeds": len(group)}
        ok = group["train_fit_ok"].astype(bool) & group["val_fit_ok"].astype(bool)
        cell["n_fit_ok"] = int(ok.sum())
        cell["frac_reached"] = float(group["grokked"].astype(bool).mean())
        cell["frac_groks"] = float(group["groks"].astype(bool).mean())
        for metric in SWEEP_METRICS:
            agg = aggregate(group[metric].astype(float))
            cell.update({f"{metric}_{k}": getattr(agg, k)
                         for k in ("mean", "sd", "ci_low", "ci_high")})
        cells.append(cell)
    return runs, pd.DataFrame(cells, columns=list(CELL_COLUMNS))

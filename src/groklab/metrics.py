"""Metrics that summarise grokking learning curves.

Every function is pure: it takes arrays (anything ``np.asarray`` accepts) of evaluation steps
(number of updates done, strictly increasing) and accuracies in [0, 1], and returns plain
numbers or small frozen dataclasses. Nothing here does I/O.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    import pandas as pd

# scipy is imported inside the functions that use it: every stage imports this module, and
# only the evaluation needs the fits (start-up pays for every import).

logger = logging.getLogger(__name__)

# erf(+-x) = +-0.5 at x = erfinv(0.5): the 25% and 75% points of an erf rise lie 2x/s apart.
_ERF_QUARTILE = 0.4769362762044699  # scipy.special.erfinv(0.5); tests/test_startup.py checks


def _curve(steps: ArrayLike, acc: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert a (steps, acc) pair to 1-D float arrays."""
    t = np.asarray(steps, dtype=float).ravel()
    y = np.asarray(acc, dtype=float).ravel()
    if t.shape != y.shape:
        raise ValueError(f"steps and acc differ in length: {t.size} != {y.size}")
    if t.size > 1 and not np.all(np.diff(t) > 0):
        raise ValueError("steps must be strictly increasing")
    return t, y


@dataclass(frozen=True)
class Crossing:
    """First evaluated step with accuracy >= threshold (``reached``), else the censoring budget."""

    step: int
    reached: bool


def steps_to_threshold(
    steps: ArrayLike, acc: ArrayLike, threshold: float = 0.99, budget: int | None = None
) -> Crossing:
    """Number of updates until accuracy first reaches ``threshold``.

    Returns the first evaluated step ``steps[i]`` with ``acc[i] >= threshold`` (equality counts,
    NaN never does). If no point reaches it, the run is right-censored: ``step = budget``
    (default: the last evaluated step) and ``reached=False``; such seeds are kept, not dropped.
    """
    t, y = _curve(steps, acc)
    hit = np.flatnonzero(y >= threshold)
    if hit.size:
        return Crossing(step=int(t[hit[0]]), reached=True)
    if budget is None:
        if t.size == 0:
            raise ValueError("empty curve and no budget: cannot define the censored step")
        budget = int(t[-1])
    return Crossing(step=int(budget), reached=False)


def max_acc_rate(steps: ArrayLike, acc: ArrayLike, window: int = 100) -> float:
    """Largest accuracy increase per update, measured over a window of at least ``window`` steps.

    ``max_i (acc[j] - acc[i]) / (steps[j] - steps[i])`` where ``j`` is the first evaluation point
    with ``steps[j] - steps[i] >= window``. Differencing over a window rather than adjacent
    points smooths evaluation noise, which would otherwise dominate the maximum. Pairs involving
    NaN are ignored. Returns 0.0 when fewer than two points exist, no window fits, or the curve
    never rises (the result is clipped at 0: it measures increases only).
    """
    if window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    t, y = _curve(steps, acc)
    i = np.arange(t.size)
    j = np.searchsorted(t, t + window, side="left")
    keep = j < t.size
    if not keep.any():
        return 0.0
    i, j = i[keep], j[keep]
    rates = (y[j] - y[i]) / (t[j] - t[i])
    rates = rates[np.isfinite(rates)]
    return max(float(rates.max()), 0.0) if rates.size else 0.0


@dataclass(frozen=True)
class ErfFit:
    """Fit of ``acc(t) = a * erf(s * (t - tau)) + b``; ``tau`` is the transition step, ``s`` its
    sharpness (1/steps), ``r2`` the coefficient of determination, ``reason`` why ``ok`` is False."""

    a: float
    s: float
    tau: float
    b: float
    r2: float
    ok: bool
    reason: str = ""

    def predict(self, t: ArrayLike) -> np.ndarray:
        """Evaluate the fitted curve at steps ``t`` (NaN where parameters are not finite)."""
        from scipy import special

        return self.a * special.erf(self.s * (np.asarray(t, dtype=float) - self.tau)) + self.b

    def to_dict(self) -> dict[str, float | bool | str]:
        """Plain-python dict of the fields."""
        return {k: v if isinstance(v, bool | str) else float(v) for k, v in asdict(self).items()}


def _failed(reason: str, **params: float) -> ErfFit:
    logger.debug("erf fit failed: %s", reason)
    p = {"a": math.nan, "s": math.nan, "tau": math.nan, "b": math.nan, "r2": math.nan} | params
    return ErfFit(**p, ok=False, reason=reason)


def fit_erf(
    steps: ArrayLike,
    acc: ArrayLike,
    a: float | None = None,
    b: float | None = None,
    min_r2: float = 0.9,
    min_rise: float = 0.1,
) -> ErfFit:
    """Least-squares fit of ``acc(t) = a * erf(s * (t - tau)) + b`` (scipy ``curve_fit``).

    ``a`` and ``b`` are fitted when None and held fixed when given (e.g. from
    :func:`erf_params_for_chance`). Constraints: ``s >= 0`` and ``tau`` within one observed span
    either side of the observed steps. Time is rescaled to [0, 1] for conditioning. Initial
    guesses come from a running median of the data: ``tau0`` is the first step reaching the
    midpoint of the rise, ``s0`` follows from the 25%-75% width; ``s0/10`` and ``10*s0`` are
    also tried and the lowest residual wins.

    Never raises on a bad curve: returns ``ok=False`` with a human-readable ``reason`` for
    < 4 points, non-finite values, a flat curve (``max - min < min_rise``, checked before
    fitting), non-convergence, ``tau`` outside the observed steps, or ``R^2 < min_r2``.
    """
    from scipy import optimize, special

    t, y = _curve(steps, acc)
    if t.size < 4:
        return _failed(f"too few points: {t.size} < 4")
    bad = int(np.count_nonzero(~np.isfinite(y)))
    if bad or not np.all(np.isfinite(t)):
        return _failed(f"non-finite values (nan/inf): {bad} accuracy values are not finite")
    rise = float(y.max() - y.min())
    if rise < min_rise:
        return _failed(f"flat curve: accuracy rises by only {rise:.3g} (< min_rise={min_rise:g})")

    t0, t1 = float(t[0]), float(t[-1])
    span = t1 - t0
    x = (t - t0) / span
    # A running median keeps single noisy evaluations from faking an early crossing.
    k = min(5, t.size) | 1
    win = np.lib.stride_tricks.sliding_window_view(np.pad(y, k // 2, mode="edge"), k)
    sm = np.median(win, axis=1)
    lo, hi = float(sm.min()), float(sm.max())

    def first_at(frac: float) -> float:
        return float(x[np.argmax(sm >= lo + frac * (hi - lo))])

    width = max(first_at(0.75) - first_at(0.25), float(np.diff(x).min()))
    s0, tau0 = 2 * _ERF_QUARTILE / width, first_at(0.5)

    fixed = {"a": a, "b": b}
    names = [n for n in ("a", "s", "tau", "b") if fixed.get(n) is None]
    inf = np.inf
    bounds = {"a": (-inf, inf), "s": (0.0, inf), "tau": (-1.0, 2.0), "b": (-inf, inf)}

    def model(xx: np.ndarray, *p: float) -> np.ndarray:
        v = fixed | dict(zip(names, p, strict=True))
        return v["a"] * special.erf(v["s"] * (xx - v["tau"])) + v["b"]

    best: np.ndarray | None = None
    best_sse, message = np.inf, ""
    for scale in (1.0, 0.1, 10.0):
        guess = {"a": (hi - lo) / 2, "s": s0 * scale, "tau": tau0, "b": (hi + lo) / 2}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # covariance warnings are irrelevant here
                popt, _ = optimize.curve_fit(
                    model, x, y, p0=[guess[n] for n in names],
                    bounds=tuple(zip(*(bounds[n] for n in names), strict=True)),
                    method="trf", max_nfev=2000,
                )
        except (RuntimeError, ValueError) as exc:
            message = str(exc)
            continue
        sse = float(np.sum((y - model(x, *popt)) ** 2))
        if np.isfinite(sse) and sse < best_sse:
            best, best_sse = popt, sse
    if best is None:
        return _failed(f"did not converge: {message}")

    v = fixed | dict(zip(names, map(float, best), strict=True))
    sst = float(np.sum((y - y.mean()) ** 2))
    params = {
        "a": float(v["a"]), "s": v["s"] / span, "tau": t0 + v["tau"] * span, "b": float(v["b"]),
        "r2": 1.0 - best_sse / sst,
    }
    if not t0 <= params["tau"] <= t1:
        return _failed(
            f"transition time tau={params['tau']:.4g} outside the observed steps [{t0:g}, {t1:g}]",
            **params,
        )
    if params["r2"] < min_r2:
        return _failed(f"poor fit: R^2={params['r2']:.3f} < min_r2={min_r2:g}", **params)
    return ErfFit(**params, ok=True, reason="")


def erf_params_for_chance(chance: float) -> tuple[float, float]:
    """``(a, b) = ((1 - c) / 2, (1 + c) / 2)``: the erf curve then runs from chance ``c`` to 1."""
    if not 0.0 <= chance < 1.0:
        raise ValueError(f"chance must lie in [0, 1), got {chance}")
    return (1.0 - chance) / 2.0, (1.0 + chance) / 2.0


def relative_gap(train_fit: ErfFit, val_fit: ErfFit) -> float:
    """How much later validation transitions: ``tau_val / tau_train - 1``.

    NaN if either fit is not ok or ``tau_train <= 0``.
    """
    if not (train_fit.ok and val_fit.ok) or train_fit.tau <= 0:
        return math.nan
    return val_fit.tau / train_fit.tau - 1.0


def relative_sharpness(train_fit: ErfFit, val_fit: ErfFit) -> float:
    """``s_val / s_train``; NaN if either fit is not ok or ``s_train <= 0``."""
    if not (train_fit.ok and val_fit.ok) or train_fit.s <= 0:
        return math.nan
    return val_fit.s / train_fit.s


def absolute_sharpness(fit: ErfFit) -> float:
    """Maximum slope of the fitted curve (accuracy per update, at ``t = tau``):
    ``2 * |a| * s / sqrt(pi)``; NaN if the fit is not ok."""
    return 2.0 * abs(fit.a) * fit.s / math.sqrt(math.pi) if fit.ok else math.nan


@dataclass(frozen=True)
class Aggregate:
    """Across-seed summary. ``censored`` means the mean is a lower bound."""

    mean: float
    sd: float
    ci_low: float
    ci_high: float
    n: int
    n_reached: int
    frac_reached: float
    censored: bool

    def to_dict(self) -> dict[str, float | int | bool]:
        """Plain-python dict of the fields."""
        return asdict(self)


def aggregate(
    values: ArrayLike, reached: ArrayLike | None = None, confidence: float = 0.95
) -> Aggregate:
    """Mean, sample sd (ddof=1) and Student-t confidence interval of the mean over seeds.

    ``values`` holds one number per seed; ``reached`` optional per-seed booleans (default all
    True). Censored seeds (``reached=False``) are KEPT at their censored value, so the mean is
    then a lower bound (``censored=True``). NaN values (e.g. failed fits) are excluded together
    with their flag; ``n`` counts the values used. sd and the CI are NaN when ``n < 2``.
    """
    v = np.asarray(values, dtype=float).ravel()
    r = np.ones(v.shape, bool) if reached is None else np.asarray(reached, bool).ravel()
    if r.shape != v.shape:
        raise ValueError(f"values and reached differ in length: {v.size} != {r.size}")
    keep = ~np.isnan(v)
    v, r = v[keep], r[keep]
    n, n_reached = int(v.size), int(r.sum())
    mean = float(v.mean()) if n else math.nan
    sd = lo = hi = math.nan
    if n >= 2:
        from scipy import stats

        sd = float(v.std(ddof=1))
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
        lo, hi = mean - half, mean + half
    return Aggregate(
        mean=mean, sd=sd, ci_low=lo, ci_high=hi, n=n, n_reached=n_reached,
        frac_reached=n_reached / n if n else math.nan, censored=bool(n_reached < n),
    )


def _last(history: pd.DataFrame, col: str) -> float:
    return float(history[col].iloc[-1]) if col in history and len(history) else math.nan


def summarize_history(
    history: pd.DataFrame,
    *,
    budget: int,
    chance: float,
    threshold: float = 0.99,
    rate_window: int = 100,
) -> dict[str, float | int | bool | str]:
    """Flat dict of scalar metrics for ONE seed's history (columns ``step``, ``train_loss``,
    ``train_acc``, ``val_loss``, ``val_acc``, ``clean_val_acc``; sorted by step).

    Keys: ``steps_to_99``/``grokked`` (validation crossing of ``threshold``, censored at
    ``budget``), ``steps_to_99_train``/``train_reached``, ``max_val_acc_rate``, ``final_*``
    (last row), ``train_fit_*``/``val_fit_*`` (erf fits with ``a, b`` fixed by ``chance``),
    ``relative_gap``, ``relative_sharpness``, ``absolute_sharpness`` (of the validation fit).
    The "99" in key names is kept even when ``threshold`` differs, so tables stay uniform.
    """
    steps = history["step"].to_numpy()
    a, b = erf_params_for_chance(chance)
    val = steps_to_threshold(steps, history["val_acc"], threshold, budget)
    train = steps_to_threshold(steps, history["train_acc"], threshold, budget)
    out: dict[str, Any] = {
        "steps_to_99": val.step,
        "grokked": val.reached,
        "steps_to_99_train": train.step,
        "train_reached": train.reached,
        "max_val_acc_rate": max_acc_rate(steps, history["val_acc"], rate_window),
    }
    for col in ("train_acc", "val_acc", "train_loss", "val_loss", "clean_val_acc"):
        out[f"final_{col}"] = _last(history, col)
    cols = {"train_fit": "train_acc", "val_fit": "val_acc"}
    fits = {prefix: fit_erf(steps, history[col], a=a, b=b) for prefix, col in cols.items()}
    for prefix, fit in fits.items():
        out.update({f"{prefix}_{k}": v for k, v in fit.to_dict().items()})
    out["relative_gap"] = relative_gap(fits["train_fit"], fits["val_fit"])
    out["relative_sharpness"] = relative_sharpness(fits["train_fit"], fits["val_fit"])
    out["absolute_sharpness"] = absolute_sharpness(fits["val_fit"])
    return out

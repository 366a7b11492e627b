"""Metrics that summarise grokking learning curves, and the statistics that compare them.

Every function is pure: it takes arrays (anything ``np.asarray`` accepts) of evaluation steps
(number of updates done, strictly increasing) and accuracies in [0, 1], or per-seed numbers,
and returns plain numbers or small frozen dataclasses. Nothing here does I/O.

- one curve: :func:`steps_to_threshold`, :func:`max_acc_rate`, :func:`fit_erf` and the gap
  and sharpness derived from two fits, :func:`grok_delay`, :func:`collapse`,
  :func:`post_threshold_sd`, all collected per seed by :func:`summarize_history`;
- across seeds: :func:`aggregate` (mean and interval, none around a censored mean),
  :func:`kaplan_meier` (fraction of seeds that reached 99% by each update);
- two cells: :func:`logrank` (censoring-aware test on steps to 99%) and
  :func:`median_difference` (difference in medians with a bootstrap interval), worded by
  :func:`comparison_verdict`;
- across cells: :func:`loglog_fit` (power law of sharpness on gap), :func:`trend`,
  :func:`rank_trend`.
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from collections.abc import Mapping
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
    then a lower bound (``censored=True``) and has no interval: an interval around a bound
    would read as a range for the true mean. NaN values (e.g. failed fits) are excluded
    together with their flag; ``n`` counts the values used. sd and the CI are NaN when
    ``n < 2``.
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
        if n_reached == n:
            half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
            lo, hi = mean - half, mean + half
    return Aggregate(
        mean=mean, sd=sd, ci_low=lo, ci_high=hi, n=n, n_reached=n_reached,
        frac_reached=n_reached / n if n else math.nan, censored=bool(n_reached < n),
    )


# --- Grokking: the delay behind it, and runs that fall back ---------------------------------

@dataclass(frozen=True)
class Analysis:
    """The ``analysis`` section of params.yaml: what makes a run grok, collapse, or fit.

    ``grok_delay``: a run groks when validation reaches 99% at least this many updates after
    training did; ``collapse_below``: validation accuracy that, after reaching 99%, marks a run
    collapsed; ``min_fit_r2``: an erf fit with a lower R^2 is not ok. The defaults are
    params.yaml's, for callers outside the pipeline (``groklab run``).
    """

    grok_delay: int = 500
    collapse_below: float = 0.9
    min_fit_r2: float = 0.95

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Analysis:
        a = params["analysis"]
        return cls(int(a["grok_delay"]), float(a["collapse_below"]), float(a["min_fit_r2"]))


@dataclass(frozen=True)
class GrokDelay:
    """Updates from training reaching 99% to validation reaching it (``steps``).

    ``censored``: validation never reached it, so ``steps`` (budget − training crossing) is a
    lower bound. ``steps`` is NaN when training never reached 99%: there is no delay to
    measure. ``groks``: validation reached 99% at least the minimum delay after training.
    """

    steps: float
    censored: bool
    groks: bool


def grok_delay(train: Crossing, val: Crossing, min_delay: int) -> GrokDelay:
    """The delay between the training and validation crossings, and whether the run groks.

    A run groks when validation reaches the threshold at least ``min_delay`` updates after
    training did; a run whose validation follows training within ``min_delay`` generalises
    promptly (it does not grok), and one whose validation never reaches it does not grok.
    """
    if not train.reached:
        return GrokDelay(math.nan, False, False)
    delay = float(val.step - train.step)
    if not val.reached:
        return GrokDelay(delay, True, False)
    return GrokDelay(delay, False, delay >= min_delay)


@dataclass(frozen=True)
class Collapse:
    """What followed the first ``acc >= threshold``: ``step``, the first evaluated step with
    accuracy below the floor (NaN when none); ``collapsed`` when the last evaluation is still
    below it (the run ended there), ``dipped`` when it fell below and came back (a transient
    dip, a different finding)."""

    collapsed: bool
    step: float
    dipped: bool = False


def collapse(steps: ArrayLike, acc: ArrayLike, threshold: float = 0.99,
             below: float = 0.9) -> Collapse:
    """Did accuracy fall below ``below`` after first reaching ``threshold``, and did it end
    there (collapse) or recover to at least ``below`` by the last evaluation (dip)?"""
    t, y = _curve(steps, acc)
    hit = np.flatnonzero(y >= threshold)
    if not hit.size:
        return Collapse(False, math.nan)
    fell = np.flatnonzero(y[hit[0]:] < below)
    if not fell.size:
        return Collapse(False, math.nan)
    ended_below = bool(y[-1] < below)
    return Collapse(ended_below, float(t[hit[0] + fell[0]]), not ended_below)


def post_threshold_sd(steps: ArrayLike, acc: ArrayLike, threshold: float = 0.99) -> float:
    """Sample sd (ddof=1) of accuracy from its first ``acc >= threshold`` to the end: how much
    it moves once reached. NaN when never reached or reached only at the last evaluation."""
    _, y = _curve(steps, acc)
    hit = np.flatnonzero(y >= threshold)
    if not hit.size or hit[0] + 1 >= y.size:
        return math.nan
    return float(np.std(y[hit[0]:], ddof=1))


# --- Seeds that reach 99%: survival curves and the comparison of two cells -------------------

@dataclass(frozen=True)
class KaplanMeier:
    """Kaplan-Meier estimate of the fraction of runs that reached the event by each time.

    ``times``: distinct event times, increasing; ``fraction``: 1 − S(t) just after each;
    ``at_risk``/``events``: runs still waiting just before each time, and events at it.
    """

    times: np.ndarray
    fraction: np.ndarray
    at_risk: np.ndarray
    events: np.ndarray

    def at(self, t: ArrayLike) -> np.ndarray:
        """The estimated fraction reached by time ``t`` (a right-continuous step function)."""
        i = np.searchsorted(self.times, np.asarray(t, dtype=float), side="right")
        return np.concatenate([[0.0], self.fraction])[i]


def _censored_sample(times: ArrayLike, events: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(times, dtype=float).ravel()
    e = np.asarray(events, dtype=bool).ravel()
    if t.shape != e.shape:
        raise ValueError(f"times and events differ in length: {t.size} != {e.size}")
    if not np.all(np.isfinite(t)):
        raise ValueError("times must be finite (a censored run counts at its budget)")
    return t, e


def kaplan_meier(times: ArrayLike, events: ArrayLike) -> KaplanMeier:
    """Product-limit estimate ``S(t) = prod_{t_j <= t} (1 - d_j / n_j)``; returns ``1 - S``.

    ``times``: per run, the step of the event (validation reaching 99%) or, when ``events``
    is False, the step at which it was censored (its budget). A run censored at ``t`` is at
    risk at ``t`` (events at a tied time happen first). With every censored run at one common
    budget this is the plain fraction of runs that reached the event by ``t``.
    """
    t, e = _censored_sample(times, events)
    uniq = np.unique(t[e])
    at_risk = np.array([np.count_nonzero(t >= u) for u in uniq], dtype=int)
    d = np.array([np.count_nonzero((t == u) & e) for u in uniq], dtype=int)
    survival = np.cumprod(1.0 - d / at_risk) if uniq.size else np.array([])
    return KaplanMeier(uniq, 1.0 - survival, at_risk, d)


@dataclass(frozen=True)
class LogRank:
    """Log-rank comparison of sample ``a`` with sample ``b``.

    ``z = (O_a - E_a) / sqrt(V_a)``: positive when ``a`` reaches the event (99% validation
    accuracy) sooner than it would if both samples were alike. ``p_exact``: two-sided
    permutation p-value over every relabelling of the pooled runs (NaN when there are more than
    :data:`EXACT_LIMIT`, or when the samples' censoring budgets differ, so that labels are not
    exchangeable); ``p_asymptotic``: from ``z ~ N(0, 1)``; ``p`` is the exact one when defined.
    ``p_floor``: the smallest ``p`` this test could give with these runs, whatever their labels
    (exact: the share of relabellings as extreme as the most extreme one; asymptotic: the p of
    complete separation, ``a``'s runs the earliest).
    """

    z: float
    p_exact: float
    p_asymptotic: float
    observed: int
    expected: float
    p_floor: float = math.nan

    @property
    def p(self) -> float:
        return self.p_exact if np.isfinite(self.p_exact) else self.p_asymptotic

    @property
    def method(self) -> str:
        """How ``p`` was computed: "exact permutation" or "asymptotic"."""
        return "exact permutation" if np.isfinite(self.p_exact) else "asymptotic"


EXACT_LIMIT = 100_000  # relabellings enumerated for the exact p-value (C(20, 10) = 184,756)


def _logrank_z(t: np.ndarray, e: np.ndarray, in_a: np.ndarray) -> tuple[np.ndarray, ...]:
    """z, O_a, E_a and V_a for each row of ``in_a`` (R, n): one labelling of the pooled runs
    each."""
    uniq = np.unique(t[e])
    risk = (t[None, :] >= uniq[:, None]).astype(float)  # (J, n) at risk just before t_j
    hit = ((t[None, :] == uniq[:, None]) & e[None, :]).astype(float)  # (J, n) events at t_j
    n_j, d_j = risk.sum(1), hit.sum(1)  # (J,)
    a = in_a.astype(float)
    n_aj, o_aj = a @ risk.T, a @ hit.T  # (R, J)
    e_aj = d_j * n_aj / n_j
    v_aj = e_aj * (n_j - d_j) / n_j * (n_j - n_aj) / np.maximum(n_j - 1, 1)
    o, ex, v = o_aj.sum(1), e_aj.sum(1), v_aj.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(v > 0, (o - ex) / np.sqrt(np.where(v > 0, v, 1.0)), 0.0)
    return z, o, ex, v


def separated_labels(t: np.ndarray, e: np.ndarray, n_a: int) -> np.ndarray:
    """Two labellings of the pooled runs (2, n): ``a`` holds the ``n_a`` earliest events, and
    the ``n_a`` latest times (censored runs last): the complete separations either way."""
    order = np.lexsort((~e, t))  # by time, events before censored runs at a tied time
    labels = np.zeros((2, t.size), bool)
    labels[0, order[:n_a]] = True
    labels[1, order[t.size - n_a:]] = True
    return labels


def logrank(a: ArrayLike, a_reached: ArrayLike, b: ArrayLike, b_reached: ArrayLike, *,
            same_budget: bool = True) -> LogRank:
    """Log-rank test of two samples of steps to 99%, censored seeds at their budget.

    The textbook statistic (Mantel 1966; e.g. Kleinbaum & Klein, *Survival Analysis*, ch. 2):
    at each distinct event time, observed minus expected events of ``a`` under the null, summed
    and scaled by the hypergeometric variance. With a few seeds per cell the normal
    approximation is poor (3 vs 3 seeds, complete separation: asymptotic p = 0.025), so the
    p-value used is exact: the share of all ``C(n_a + n_b, n_a)`` relabellings whose ``|z|`` is
    at least the observed one (3 vs 3: at least 2/20 = 0.1). Labels are exchangeable under the
    null only when both samples are censored at the same budget (``same_budget``); otherwise
    only the asymptotic p-value is given. No event in either sample: z = 0, p = 1.
    """
    ta, ea = _censored_sample(a, a_reached)
    tb, eb = _censored_sample(b, b_reached)
    t, e = np.concatenate([ta, tb]), np.concatenate([ea, eb])
    in_a = np.arange(t.size) < ta.size
    z, o, ex, _ = (float(x[0]) for x in _logrank_z(t, e, in_a[None, :]))
    from scipy import stats

    p_asym = float(2 * stats.norm.sf(abs(z)))
    p_exact = math.nan
    extreme = float(np.abs(_logrank_z(t, e, separated_labels(t, e, ta.size))[0]).max())
    floor = float(2 * stats.norm.sf(extreme))
    if ta.size and tb.size and same_budget and math.comb(t.size, ta.size) <= EXACT_LIMIT:
        labels = np.zeros((math.comb(t.size, ta.size), t.size), bool)
        for row, chosen in enumerate(itertools.combinations(range(t.size), ta.size)):
            labels[row, list(chosen)] = True
        zs = np.abs(_logrank_z(t, e, labels)[0])
        p_exact = float(np.mean(zs >= abs(z) - 1e-9))
        floor = float(np.mean(zs >= zs.max() - 1e-9))
    return LogRank(z, p_exact, p_asym, int(round(o)), ex, floor)


@dataclass(frozen=True)
class MedianDifference:
    """``median(a) - median(b)`` of steps to 99% with censored seeds at their budget.

    ``bound``: "" when both medians are observed; ">=" when ``a``'s median is a censored value
    (the difference is a lower bound); "<=" when ``b``'s is; "undefined" when both are.
    No interval: at 3 seeds a resampling interval for a median difference under-covers (a
    percentile bootstrap covered 90.5% for a stated 95%), and the distribution-free one (from
    the Mann-Whitney statistic) cannot reach 95% at 3 vs 3 (its highest level is 90%); the
    interval of an effect is the time ratio's (:func:`groklab.survival.time_ratio`).
    """

    diff: float
    bound: str


def _median(v: np.ndarray, reached: np.ndarray) -> tuple[float, bool]:
    """Median and whether a censored value enters it (censored sort after equal values)."""
    order = np.lexsort((~reached, v))
    v, reached = v[order], reached[order]
    mid = [(v.size - 1) // 2, v.size // 2]
    return float(np.mean(v[mid])), bool(not reached[mid].all())


def median_difference(a: ArrayLike, a_reached: ArrayLike, b: ArrayLike,
                      b_reached: ArrayLike) -> MedianDifference:
    """Difference in medians (a description: no test, no interval; see
    :class:`MedianDifference`). Censored seeds count at their budget."""
    va, ra = _censored_sample(a, a_reached)
    vb, rb = _censored_sample(b, b_reached)
    if not (va.size and vb.size):
        return MedianDifference(math.nan, "undefined")
    (ma, ca), (mb, cb) = _median(va, ra), _median(vb, rb)
    bound = {(False, False): "", (True, False): ">=", (False, True): "<="}.get((ca, cb),
                                                                               "undefined")
    return MedianDifference(ma - mb if bound != "undefined" else math.nan, bound)


def comparison_verdict(test: LogRank, alpha: float = 0.05) -> str:
    """"faster" or "slower" than the reference when the log-rank p-value is below ``alpha``
    (the sign of ``z``), else "not distinguishable"."""
    if not test.p < alpha:
        return "not distinguishable"
    return "faster" if test.z > 0 else "slower"


# --- Across cells: power laws and trends ------------------------------------------------------

@dataclass(frozen=True)
class LogLogFit:
    """``log10 y = intercept + slope * log10 x`` by least squares, and Pearson's r of the logs.

    ``n``: points used; ``n_nonpositive``: finite points left out because x or y <= 0 (no
    logarithm); ``n_missing``: points with NaN (a failed erf fit). NaN fit when ``n < 3``.
    """

    slope: float
    intercept: float
    r: float
    p_value: float
    n: int
    n_nonpositive: int
    n_missing: int

    def predict(self, x: ArrayLike) -> np.ndarray:
        return 10.0 ** self.intercept * np.asarray(x, dtype=float) ** self.slope

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.slope))


def loglog_fit(x: ArrayLike, y: ArrayLike) -> LogLogFit:
    """Straight-line fit of ``log10 y`` on ``log10 x`` over the points where both are > 0."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    finite = np.isfinite(x) & np.isfinite(y)
    keep = finite & (x > 0) & (y > 0)
    n, nonpos, missing = int(keep.sum()), int((finite & ~keep).sum()), int((~finite).sum())
    lx, ly = np.log10(x[keep]), np.log10(y[keep])
    if n < 3 or np.ptp(lx) == 0 or np.ptp(ly) == 0:  # a line through <3 points says nothing
        return LogLogFit(np.nan, np.nan, np.nan, np.nan, n, nonpos, missing)
    from scipy import stats

    slope, intercept = np.polyfit(lx, ly, 1)
    r, p = stats.pearsonr(lx, ly)
    return LogLogFit(float(slope), float(intercept), float(r), float(p), n, nonpos, missing)


@dataclass(frozen=True)
class Trend:
    """How ``y`` moves as ``x`` grows: ``direction`` is "rises" or "falls" (monotonically),
    "not monotonic", or "too few" (fewer than two finite points); the end points follow."""

    direction: str
    x_first: float = math.nan
    y_first: float = math.nan
    x_last: float = math.nan
    y_last: float = math.nan


def trend(xs: ArrayLike, ys: ArrayLike) -> Trend:
    """:class:`Trend` of the points sorted by ``x`` (points with a non-finite ``y`` left out)."""
    pts = sorted((float(x), float(y)) for x, y in zip(np.ravel(xs), np.ravel(ys), strict=True)
                 if np.isfinite(y))
    if len(pts) < 2:
        return Trend("too few")
    d = np.diff([y for _, y in pts])
    direction = "rises" if (d > 0).all() else "falls" if (d < 0).all() else "not monotonic"
    return Trend(direction, *pts[0], *pts[-1])


def _last(history: pd.DataFrame, col: str) -> float:
    return float(history[col].iloc[-1]) if col in history and len(history) else math.nan


def crossings(steps: ArrayLike, train_acc: ArrayLike, val_acc: ArrayLike, *, budget: int,
              analysis: Analysis, threshold: float = 0.99) -> dict[str, float | int | bool]:
    """When training and validation first reach ``threshold`` and what follows, per seed.

    ``steps_to_99``/``grokked``: the validation crossing (``grokked`` only says it was
    reached; censored at ``budget`` when not); ``steps_to_99_train``/``train_reached``: the
    training crossing; ``grok_delay_steps``/``grok_delay_censored``/``groks``
    (:func:`grok_delay`: whether the run groks); ``collapsed`` (ran to ``budget`` and ended
    below ``analysis.collapse_below`` after reaching the threshold), ``stopped_below`` (ended
    below it because a stop rule ended the run before ``budget``, e.g. mid-dip: a collapse
    and a dip cannot be told apart), ``dipped`` (fell below it and recovered) and
    ``collapse_step`` (:func:`collapse`); ``post_grok_val_sd`` (:func:`post_threshold_sd` of
    validation accuracy).
    """
    val = steps_to_threshold(steps, val_acc, threshold, budget)
    train = steps_to_threshold(steps, train_acc, threshold, budget)
    delay = grok_delay(train, val, analysis.grok_delay)
    fell = collapse(steps, val_acc, threshold, analysis.collapse_below)
    stopped_early = len(steps) > 0 and float(np.max(steps)) < budget
    return {
        "steps_to_99": val.step, "grokked": val.reached,
        "steps_to_99_train": train.step, "train_reached": train.reached,
        "grok_delay_steps": delay.steps, "grok_delay_censored": delay.censored,
        "groks": delay.groks, "collapsed": fell.collapsed and not stopped_early,
        "stopped_below": fell.collapsed and stopped_early, "dipped": fell.dipped,
        "collapse_step": fell.step,
        "post_grok_val_sd": post_threshold_sd(steps, val_acc, threshold),
    }


def summarize_history(
    history: pd.DataFrame,
    *,
    budget: int,
    chance: float,
    analysis: Analysis = Analysis(),  # noqa: B008 - frozen, so a shared default is safe
    augmented: bool = False,
    threshold: float = 0.99,
    rate_window: int = 100,
) -> dict[str, float | int | bool | str]:
    """Flat dict of scalar metrics for ONE seed's history (columns ``step``, ``train_acc``,
    ``val_acc``, ``clean_val_acc``, losses; sorted by step). ``train_acc`` is the training
    curve: accuracy of the model in eval mode on the un-augmented training split.

    Keys: :func:`crossings`; ``steps_to_95``/``reached_95`` (Grokfast's measure, censored at
    ``budget`` like ``steps_to_99``); ``max_softmax_collapse`` (largest share of the
    training-curve sample whose float32 loss was exactly 0; NaN without that column);
    ``max_val_acc_rate``; ``final_*`` (last row);
    ``train_fit_*``/``val_fit_*`` (erf fits with ``a, b`` fixed by ``chance``, ok only with
    R^2 >= ``analysis.min_fit_r2``); ``relative_gap``, ``relative_sharpness``,
    ``absolute_sharpness`` (of the validation fit). For an ``augmented`` run, whose
    validation split holds pairs an augmented training example can equal, the clean
    validation curve is fitted too (``clean_fit_*``, ``relative_gap_clean``); otherwise those
    are NaN with the reason. The "99" in key names is kept even when ``threshold`` differs.
    """
    steps = history["step"].to_numpy()
    a, b = erf_params_for_chance(chance)
    out: dict[str, Any] = crossings(steps, history["train_acc"], history["val_acc"],
                                    budget=budget, analysis=analysis, threshold=threshold)
    # Grokfast's measure beside ours: the first evaluation at 95% validation accuracy.
    at95 = steps_to_threshold(steps, history["val_acc"], 0.95, budget)
    out["steps_to_95"], out["reached_95"] = at95.step, at95.reached
    collapse_col = history.get("softmax_collapse")  # absent from histories before it existed
    out["max_softmax_collapse"] = (float(collapse_col.max()) if collapse_col is not None
                                   and len(collapse_col) else math.nan)
    out["max_val_acc_rate"] = max_acc_rate(steps, history["val_acc"], rate_window)
    for col in ("train_acc", "val_acc", "train_loss", "val_loss", "clean_val_acc",
                "softmax_collapse"):
        out[f"final_{col}"] = _last(history, col)
    fits = {prefix: fit_erf(steps, history[col], a=a, b=b, min_r2=analysis.min_fit_r2)
            for prefix, col in (("train_fit", "train_acc"), ("val_fit", "val_acc"))}
    fits["clean_fit"] = (
        fit_erf(steps, history["clean_val_acc"], a=a, b=b, min_r2=analysis.min_fit_r2)
        if augmented else _failed("not augmented: the clean curve is the validation curve"))
    for prefix, fit in fits.items():
        out.update({f"{prefix}_{k}": v for k, v in fit.to_dict().items()})
    out["relative_gap"] = relative_gap(fits["train_fit"], fits["val_fit"])
    out["relative_gap_clean"] = relative_gap(fits["train_fit"], fits["clean_fit"])
    out["relative_sharpness"] = relative_sharpness(fits["train_fit"], fits["val_fit"])
    out["absolute_sharpness"] = absolute_sharpness(fits["val_fit"])
    return out


@dataclass(frozen=True)
class RankTrend:
    """Spearman's rank correlation of ``y`` with ``x`` over ``n`` finite points, its two-sided
    p-value, and ``direction``: "rises" or "falls" when ``p < alpha``, else None."""

    rho: float
    p_value: float
    n: int
    alpha: float = 0.05

    @property
    def direction(self) -> str | None:
        if not self.p_value < self.alpha:
            return None
        return "rises" if self.rho > 0 else "falls"


RANK_EXACT_MAX = 8  # up to 8! = 40,320 orderings, Spearman's p is exact by enumeration


def rank_trend(xs: ArrayLike, ys: ArrayLike, alpha: float = 0.05) -> RankTrend:
    """Does ``y`` move with ``x`` (one point per run)? Spearman's rho (scipy), NaN points left
    out; rho and p are NaN with fewer than three points or a constant variable.

    The p-value is two-sided and exact for at most :data:`RANK_EXACT_MAX` points (the share
    of all orderings of ``y`` whose ``|rho|`` is at least the observed one: 3 points cannot go
    below 1/3), where scipy's t approximation would give p = 0 for a perfect order; beyond
    that, scipy's.
    """
    x, y = np.asarray(xs, dtype=float).ravel(), np.asarray(ys, dtype=float).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return RankTrend(math.nan, math.nan, int(x.size), alpha)
    from scipy import stats

    rho, p = stats.spearmanr(x, y)
    if x.size <= RANK_EXACT_MAX:
        rx, ry = stats.rankdata(x), stats.rankdata(y)
        perms = np.array(list(itertools.permutations(range(y.size))))
        ryp = ry[perms]  # (P, n): every ordering of y's ranks against x's
        rxc, ryc = rx - rx.mean(), ryp - ryp.mean(axis=1, keepdims=True)
        rhos = ryc @ rxc / np.sqrt((ryc ** 2).sum(1) * (rxc ** 2).sum())
        p = float(np.mean(np.abs(rhos) >= abs(rho) - 1e-12))
    return RankTrend(float(rho), float(p), int(x.size), alpha)

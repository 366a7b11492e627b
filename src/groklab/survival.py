"""Comparisons of censored times to an event that can reach a verdict at a few seeds per cell.

At the papers' 3 seeds an exact two-sample log-rank test cannot go below p = 0.1, so no
single task's comparison can be called significant whatever the effect. Two things have
power there:

- the study-level question ("does this value change grokking across the study's tasks?"):
  :func:`stratified_logrank`, a log-rank test stratified by task, exact by permutation within
  each task where the relabellings can be enumerated, else by Monte-Carlo relabelling or the
  normal approximation, and always saying which (``method``) and how small a p it could give
  (``p_floor``);
- an effect size with an interval: :func:`time_ratio`, a log-normal accelerated-failure-time
  fit (lifelines' ``LogNormalAFTFitter``; the closed form when nothing is censored) giving
  how many times longer the cell takes than the reference, censored seeds kept, with a
  small-sample (Student t) interval.

Every time is a step count: the event is e.g. validation accuracy reaching 99%, a censored
run counts at its budget. Pure: arrays in, frozen dataclasses out.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from groklab.metrics import _censored_sample, _logrank_z, separated_labels

EXACT_LIMIT = 1_000_000  # relabellings (product over strata) enumerated for an exact p
MC_DRAWS = 20_000  # relabellings drawn, from a fixed seed, beyond EXACT_LIMIT
MC_SEED = 0


@dataclass(frozen=True)
class StratifiedLogRank:
    """Log-rank test of ``a`` against ``b`` stratified by ``strata`` (e.g. task).

    ``z = sum_s (O_s - E_s) / sqrt(sum_s V_s)`` over the strata holding both samples:
    positive when ``a`` reaches the event sooner. ``p`` is two-sided; ``method`` is
    "exact permutation" (every relabelling within each stratum), "Monte-Carlo permutation
    (N relabellings)" or "asymptotic" (normal; used when a stratum's runs have different
    budgets, so that labels are not exchangeable). ``p_floor``: the smallest p the test could
    give with these runs whatever their labels. ``strata``: strata with both samples.
    """

    z: float
    p: float
    method: str
    p_floor: float
    p_asymptotic: float
    strata: int
    n_a: int
    n_b: int


def _stratum_scores(t: np.ndarray, e: np.ndarray, labels: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``O - E`` and ``V`` of ``a`` for each labelling (row of ``labels``) of one stratum."""
    _, o, ex, v = _logrank_z(t, e, labels)
    return o - ex, v


def _z(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(v > 0, u / np.sqrt(np.where(v > 0, v, 1.0)), 0.0)


def _all_labels(n: int, k: int) -> np.ndarray:
    labels = np.zeros((math.comb(n, k), n), bool)
    for row, chosen in enumerate(itertools.combinations(range(n), k)):
        labels[row, list(chosen)] = True
    return labels


def stratified_logrank(times: ArrayLike, events: ArrayLike, in_a: ArrayLike,
                       strata: ArrayLike, *, exchangeable: ArrayLike | None = None,
                       exact_limit: int = EXACT_LIMIT, draws: int = MC_DRAWS,
                       seed: int = MC_SEED) -> StratifiedLogRank:
    """Stratified log-rank test (e.g. Kalbfleisch & Prentice, *The Statistical Analysis of
    Failure Time Data*, 2nd ed., 7.2.4): per stratum the textbook ``O - E`` and
    hypergeometric ``V`` of sample ``a`` (``in_a`` True), summed over strata.

    Under the null, labels are exchangeable within a stratum whose runs share one budget
    (``exchangeable``: per stratum, in order of first appearance; default all True), so the
    p-value is exact by enumerating every relabelling within each stratum when their product
    is at most ``exact_limit`` (4 tasks of 3 vs 3 seeds: 20^4 = 160,000, floor 2/160,000);
    beyond it ``draws`` relabellings from ``seed`` give a Monte-Carlo p (``(1 + hits) /
    (draws + 1)``, floor ``1 / (draws + 1)``); with a non-exchangeable stratum, the normal
    approximation (floor: the p of complete separation in every stratum). No event anywhere:
    z = 0, p = 1.
    """
    t, e = _censored_sample(times, events)
    a = np.asarray(in_a, bool).ravel()
    s = np.asarray(strata).ravel()
    if not (a.shape == t.shape == s.shape):
        raise ValueError(f"times, in_a and strata differ in length: {t.size}, {a.size}, "
                         f"{s.size}")
    keys = list(dict.fromkeys(s.tolist()))
    swap = np.ones(len(keys), bool) if exchangeable is None else np.asarray(exchangeable, bool)
    if swap.size != len(keys):
        raise ValueError(f"exchangeable has {swap.size} flags for {len(keys)} strata")
    used = []  # (t, e, a, exchangeable) of strata holding both samples
    for key, ok in zip(keys, swap, strict=True):
        m = s == key
        if a[m].any() and (~a[m]).any():
            used.append((t[m], e[m], a[m], bool(ok)))
    from scipy import stats

    if not used:
        return StratifiedLogRank(0.0, 1.0, "asymptotic", 1.0, 1.0, 0, int(a.sum()),
                                 int((~a).sum()))
    u_obs = v_obs = 0.0
    extreme = 0.0
    for ts, es, as_, _ in used:
        u, v = _stratum_scores(ts, es, as_[None, :])
        u_obs, v_obs = u_obs + float(u[0]), v_obs + float(v[0])
    z = float(_z(np.array([u_obs]), np.array([v_obs]))[0])
    p_asym = float(2 * stats.norm.sf(abs(z)))
    # Complete separation in every stratum, each way: the most extreme z the runs allow.
    for side in (0, 1):
        u_sep = v_sep = 0.0
        for ts, es, as_, _ in used:
            u, v = _stratum_scores(ts, es, separated_labels(ts, es, int(as_.sum()))[side:side + 1])
            u_sep, v_sep = u_sep + float(u[0]), v_sep + float(v[0])
        extreme = max(extreme, abs(float(_z(np.array([u_sep]), np.array([v_sep]))[0])))
    n_a, n_b = int(sum(x[2].sum() for x in used)), int(sum((~x[2]).sum() for x in used))
    if not all(x[3] for x in used):
        return StratifiedLogRank(z, p_asym, "asymptotic", float(2 * stats.norm.sf(extreme)),
                                 p_asym, len(used), n_a, n_b)
    sizes = [math.comb(ts.size, int(as_.sum())) for ts, _, as_, _ in used]
    if math.prod(sizes) <= exact_limit:
        u_all, v_all = np.zeros(1), np.zeros(1)
        for ts, es, as_, _ in used:  # every combination of the strata's relabellings
            u, v = _stratum_scores(ts, es, _all_labels(ts.size, int(as_.sum())))
            u_all = (u_all[:, None] + u[None, :]).ravel()
            v_all = (v_all[:, None] + v[None, :]).ravel()
        zs = np.abs(_z(u_all, v_all))
        return StratifiedLogRank(z, float(np.mean(zs >= abs(z) - 1e-9)), "exact permutation",
                                 float(np.mean(zs >= zs.max() - 1e-9)), p_asym, len(used),
                                 n_a, n_b)
    rng = np.random.default_rng(seed)
    u_all, v_all = np.zeros(draws), np.zeros(draws)
    for ts, es, as_, _ in used:
        labels = rng.permuted(np.broadcast_to(as_, (draws, as_.size)), axis=1)
        u, v = _stratum_scores(ts, es, labels)
        u_all, v_all = u_all + u, v_all + v
    hits = int(np.sum(np.abs(_z(u_all, v_all)) >= abs(z) - 1e-9))
    return StratifiedLogRank(z, (1 + hits) / (draws + 1),
                             f"Monte-Carlo permutation ({draws} relabellings)",
                             1 / (draws + 1), p_asym, len(used), n_a, n_b)


# --- Effect size: the time ratio of a log-normal accelerated-failure-time model ------------

@dataclass(frozen=True)
class TimeRatio:
    """How many times longer ``a`` takes to reach the event than ``b`` (``ratio`` < 1: ``a``
    is faster), with its ``confidence`` interval and the two-sided ``p`` of ratio = 1.

    ``n``: runs fitted (censored ones kept); ``n_events``: of which reached the event; ``df``:
    degrees of freedom of the t interval (events minus location parameters). ``reason`` says
    why the ratio is undefined (NaN) when it is.
    """

    ratio: float
    ci_low: float
    ci_high: float
    p: float
    n: int
    n_events: int
    df: int
    reason: str = ""

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.ratio))


def _undefined(reason: str, n: int, n_events: int, df: int = 0) -> TimeRatio:
    return TimeRatio(math.nan, math.nan, math.nan, math.nan, n, n_events, df, reason)


def _design(a: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Columns: the ``a`` indicator, then one indicator per stratum after the first (the
    intercept is the first stratum's ``b``)."""
    keys = list(dict.fromkeys(s.tolist()))
    cols = [a.astype(float)] + [(s == k).astype(float) for k in keys[1:]]
    return np.column_stack(cols)


def _fit_closed_form(y: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    """Nothing censored: the maximum-likelihood fit is least squares on log time. Returns the
    ``a`` coefficient and its Wald standard error (with sigma's MLE, RSS / n)."""
    design = np.column_stack([np.ones(y.size), x])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    rss = float(np.sum((y - design @ beta) ** 2))
    cov = np.linalg.inv(design.T @ design) * rss / y.size
    return float(beta[1]), float(math.sqrt(max(cov[1, 1], 0.0)))


def _fit_lifelines(y: np.ndarray, e: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    """Censored log-normal AFT by maximum likelihood (lifelines), started from least squares
    on log time. Returns the ``a`` coefficient and its Wald standard error."""
    import warnings

    import pandas as pd
    from lifelines import LogNormalAFTFitter

    names = [f"x{i}" for i in range(x.shape[1])]
    frame = pd.DataFrame(x, columns=names).assign(T=np.exp(y), E=e.astype(int))
    design = np.column_stack([np.ones(y.size), x])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    spread = max(float(np.std(y - design @ beta)), 1e-3)
    fitter = LogNormalAFTFitter()
    # lifelines orders parameters by name: mu_ (covariates, then Intercept), then sigma_.
    order = sorted(names) + ["Intercept"]
    start = [beta[1 + names.index(n)] if n != "Intercept" else beta[0] for n in order]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter: checked below
        fitter.fit(frame, "T", "E", initial_point=np.array([*start, math.log(spread)]))
    coef = float(fitter.params_[("mu_", "x0")])
    se = float(math.sqrt(fitter.variance_matrix_.loc[("mu_", "x0"), ("mu_", "x0")]))
    return coef, se


def time_ratio(times: ArrayLike, events: ArrayLike, in_a: ArrayLike,
               strata: ArrayLike | None = None, *, confidence: float = 0.95) -> TimeRatio:
    """Time ratio of ``a`` (``in_a`` True) to ``b`` from a log-normal AFT model.

    ``log T = b0 + beta * [a] + sum_s g_s * [stratum s] + sigma * eps``, ``eps ~ N(0, 1)``,
    one intercept per stratum (task), censored runs contributing ``P(T > budget)``; the
    ratio is ``exp(beta)``. Fitted by maximum likelihood: lifelines' ``LogNormalAFTFitter``,
    or least squares on log time when nothing is censored (the same maximum).

    The interval is ``beta ± t(df) * se * sqrt(n_events / df)``, ``df = n_events - k`` with
    ``k`` location parameters: with nothing censored this is exactly the Student t interval
    of the regression on log time, whose coverage is exact for log-normal times (the Wald
    interval, ``± 1.96 se`` with sigma's MLE, covers P(|t_4| <= 1.96 sqrt(4/6)) = 81.5% at
    3 vs 3). With censoring it is the same correction on the likelihood's standard error
    (approximate). Strata with no event, or without both samples, are left out. Undefined
    when a sample has no event (its times are only bounds), ``df < 1`` (e.g. one seed per
    sample), or the seeds show no spread.
    """
    t, e = _censored_sample(times, events)
    a = np.asarray(in_a, bool).ravel()
    s = np.zeros(t.size, int) if strata is None else np.asarray(strata).ravel()
    if not (a.shape == t.shape == s.shape):
        raise ValueError(f"times, in_a and strata differ in length: {t.size}, {a.size}, "
                         f"{s.size}")
    if np.any(t <= 0):
        raise ValueError("times must be positive for a log-normal model")
    keep = np.zeros(t.size, bool)
    for key in dict.fromkeys(s.tolist()):
        m = s == key
        keep |= m & bool(e[m].any() and a[m].any() and (~a[m]).any())
    t, e, a, s = t[keep], e[keep], a[keep], s[keep]
    n, n_events = int(t.size), int(e.sum())
    for side, label in ((a, "the cell"), (~a, "the reference")):
        if not (e & side).any():
            return _undefined(f"no seed of {label} reached the event", n, n_events)
    x = _design(a, s)
    df = n_events - (x.shape[1] + 1)
    if df < 1:
        return _undefined(f"{n_events} events: too few for {x.shape[1] + 1} location "
                          "parameters, a spread and an interval", n, n_events, df)
    y = np.log(t)
    try:
        coef, se = _fit_closed_form(y, x) if e.all() else _fit_lifelines(y, e, x)
    except Exception as exc:  # noqa: BLE001 - lifelines raises several kinds on a bad fit
        return _undefined(f"the fit failed ({type(exc).__name__})", n, n_events, df)
    if not (np.isfinite(coef) and np.isfinite(se)) or se <= 1e-9:
        return _undefined("the seeds show no spread: no interval", n, n_events, df)
    from scipy import stats

    se_t = se * math.sqrt(n_events / df)
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se_t
    p = float(2 * stats.t.sf(abs(coef) / se_t, df))
    return TimeRatio(math.exp(coef), math.exp(coef - half), math.exp(coef + half), p, n,
                     n_events, df)

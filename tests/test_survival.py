"""The study-level tests and the time ratio against independent computations: a plain-Python
log-rank loop with brute-force relabelling, scipy's log-rank, a censored log-normal likelihood
written here and maximised by scipy, the Student t interval, and coverage by simulation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from groklab.summary import AFT, compare_cells, compare_study
from groklab.survival import _fit_lifelines, stratified_logrank, time_ratio


def _loop_scores(t, e, a):
    """O - E and V of sample ``a`` in one stratum, by the textbook loop over event times."""
    u = v = 0.0
    for time in sorted({x for x, ev in zip(t, e, strict=True) if ev}):
        n = sum(x >= time for x in t)
        n_a = sum(x >= time and g for x, g in zip(t, a, strict=True))
        d = sum(x == time and ev for x, ev in zip(t, e, strict=True))
        d_a = sum(x == time and ev and g for x, ev, g in zip(t, e, a, strict=True))
        u += d_a - d * n_a / n
        v += d * (n_a / n) * (1 - n_a / n) * (n - d) / max(n - 1, 1)
    return u, v


def _loop_z(strata):
    u = v = 0.0
    for t, e, a in strata:
        du, dv = _loop_scores(t, e, a)
        u, v = u + du, v + dv
    return u / math.sqrt(v) if v > 0 else 0.0


# Three tasks, censored at a budget of 1000 within each; ties inside and across samples.
STRATA = [
    ([100, 200, 150, 1000, 400], [True, True, True, False, True], [1, 1, 0, 0, 0]),
    ([300, 300, 500, 800, 1000], [True, True, True, True, False], [1, 0, 1, 0, 0]),
    ([250, 600, 1000, 1000], [True, True, False, False], [1, 1, 0, 0]),
]


def _flat(strata):
    t = np.concatenate([s[0] for s in strata]).astype(float)
    e = np.concatenate([s[1] for s in strata]).astype(bool)
    a = np.concatenate([s[2] for s in strata]).astype(bool)
    k = np.concatenate([[i] * len(s[0]) for i, s in enumerate(strata)])
    return t, e, a, k


def test_stratified_logrank_matches_a_loop_and_brute_force_relabelling():
    t, e, a, k = _flat(STRATA)
    test = stratified_logrank(t, e, a, k)
    z = _loop_z([(s[0], s[1], [bool(x) for x in s[2]]) for s in STRATA])
    assert test.z == pytest.approx(z)
    # Every relabelling within each stratum: C(5,2) * C(5,2) * C(4,2) = 600 labellings.
    per = [[[i in chosen for i in range(len(s[0]))]
            for chosen in itertools.combinations(range(len(s[0])), sum(s[2]))] for s in STRATA]
    zs = np.array([abs(_loop_z([(s[0], s[1], lab) for s, lab in zip(STRATA, combo,
                                                                     strict=True)]))
                   for combo in itertools.product(*per)])
    assert zs.size == 600
    assert test.method == "exact permutation"
    assert test.p == pytest.approx(np.mean(zs >= abs(z) - 1e-9))
    assert test.p_floor == pytest.approx(np.mean(zs >= zs.max() - 1e-9))
    assert test.p_asymptotic == pytest.approx(2 * stats.norm.sf(abs(z)))
    assert (test.strata, test.n_a, test.n_b) == (3, 6, 8)


def test_one_stratum_is_scipys_logrank():
    t, e, a, _ = _flat(STRATA[:1])
    test = stratified_logrank(t, e, a, np.zeros(t.size))
    ref = stats.logrank(stats.CensoredData.right_censored(t[a], ~e[a]),
                        stats.CensoredData.right_censored(t[~a], ~e[~a]))
    assert test.z == pytest.approx(ref.statistic)


def test_beyond_the_limit_the_p_is_monte_carlo_or_asymptotic_and_says_so():
    t, e, a, k = _flat(STRATA)
    exact = stratified_logrank(t, e, a, k)
    mc = stratified_logrank(t, e, a, k, exact_limit=100, draws=20_000)
    assert mc.method == "Monte-Carlo permutation (20000 relabellings)"
    assert mc.p == pytest.approx(exact.p, abs=4 * math.sqrt(exact.p * (1 - exact.p) / 20_000))
    assert mc.p_floor == pytest.approx(1 / 20_001)
    # A task whose runs ran different budgets: labels are not exchangeable there.
    asym = stratified_logrank(t, e, a, k, exchangeable=[True, False, True])
    assert asym.method == "asymptotic" and asym.p == pytest.approx(exact.p_asymptotic)


def _study(effect: float, tasks=("t1", "t2", "t3", "t4"), seeds=3, sd=0.08, seed=1):
    """Per-seed rows of a study: value ``fast`` takes ``effect`` times the default's steps."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, task in enumerate(tasks):
        for value, factor in (("default", 1.0), ("fast", effect)):
            for s in range(seeds):
                steps = float(round(2000 * (1 + 0.2 * i) * factor * math.exp(rng.normal(0, sd))))
                rows.append({"task": task, "value": value, "seed": s, "steps_to_99": steps,
                             "grokked": True, "budget": 7500})
    return pd.DataFrame(rows)


def test_three_against_three_with_a_large_effect_is_called_faster():
    """The exact per-task log-rank cannot go below 0.1 at 3 vs 3; the time ratio's interval
    and the study-level stratified test can, and they decide."""
    runs = _study(effect=1 / 3)
    per_task = compare_cells(runs, "value", "default")
    assert len(per_task) == 4
    assert per_task["logrank_floor"].tolist() == pytest.approx([0.1] * 4)
    assert per_task["logrank_p"].tolist() == pytest.approx([0.1] * 4)
    assert (per_task["decided_by"] == AFT).all() and (per_task["verdict"] == "faster").all()
    assert (per_task["time_ratio_ci_high"] < 1).all()
    study = compare_study(runs, "value", "default")
    (row,) = study.to_dict("records")
    assert row["tasks"] == 4 and row["logrank_method"] == "exact permutation"
    assert row["logrank_floor"] == pytest.approx(2 / 20 ** 4)  # both complete separations
    assert row["decided_by"] == "log-rank, exact permutation" and row["verdict"] == "faster"
    # No effect: nothing is called faster or slower.
    same = compare_study(_study(effect=1.0), "value", "default")
    assert same["verdict"].tolist() == ["not distinguishable"]


def test_time_ratio_against_the_t_interval_on_log_times():
    """Nothing censored: the interval is the pooled two-sample Student t interval."""
    a, b = np.array([1000.0, 1210.0, 1090.0]), np.array([2900.0, 3400.0, 3050.0])
    out = time_ratio(np.r_[a, b], np.ones(6, bool), np.arange(6) < 3)
    la, lb = np.log(a), np.log(b)
    diff = la.mean() - lb.mean()
    s2 = (((la - la.mean()) ** 2).sum() + ((lb - lb.mean()) ** 2).sum()) / 4
    half = stats.t.ppf(0.975, 4) * math.sqrt(s2 * (1 / 3 + 1 / 3))
    assert out.ratio == pytest.approx(math.exp(diff))
    assert (out.ci_low, out.ci_high) == (pytest.approx(math.exp(diff - half)),
                                         pytest.approx(math.exp(diff + half)))
    assert out.p == pytest.approx(stats.ttest_ind(la, lb).pvalue) and out.df == 4


def _neg_loglik(theta, y, e, x):
    """Censored log-normal AFT, written out: density for events, survival for the rest."""
    beta, log_sigma = theta[:-1], theta[-1]
    sigma = math.exp(log_sigma)
    r = (y - np.column_stack([np.ones(y.size), x]) @ beta) / sigma
    return -(np.sum(stats.norm.logpdf(r[e]) - log_sigma - y[e]) + np.sum(stats.norm.logsf(r[~e])))


def test_censored_fit_matches_a_hand_written_likelihood():
    t, e, a, k = _flat(STRATA)
    y = np.log(t)
    x = np.column_stack([a, k == 1, k == 2]).astype(float)
    coef, se = _fit_lifelines(y, e, x)
    best = optimize.minimize(_neg_loglik, np.r_[np.zeros(4) + [6, 0, 0, 0], 0.0],
                             args=(y, e, x), method="BFGS", options={"gtol": 1e-10})
    assert coef == pytest.approx(best.x[1], abs=1e-4)
    # Standard error from the observed information: a central-difference Hessian.
    h, n = 1e-4, best.x.size
    hess = np.zeros((n, n))

    def f(theta):
        return _neg_loglik(theta, y, e, x)

    for i, j in itertools.product(range(n), repeat=2):
        di, dj = np.eye(n)[i] * h, np.eye(n)[j] * h
        hess[i, j] = (f(best.x + di + dj) - f(best.x + di - dj) - f(best.x - di + dj)
                      + f(best.x - di - dj)) / (4 * h * h)
    assert se == pytest.approx(math.sqrt(np.linalg.inv(hess)[1, 1]), rel=1e-3)
    out = time_ratio(t, e, a, k)  # the public function on the same runs, strata as intercepts
    df = int(e.sum()) - 4  # intercept, the sample, two more strata
    half = stats.t.ppf(0.975, df) * se * math.sqrt(e.sum() / df)
    assert out.ratio == pytest.approx(math.exp(coef))
    assert out.ci_high == pytest.approx(math.exp(coef + half))


def test_uncensored_closed_form_is_the_likelihood_maximum():
    runs = _study(effect=0.5, tasks=("t1", "t2"))
    t = runs["steps_to_99"].to_numpy(float)
    a = (runs["value"] == "fast").to_numpy()
    k = (runs["task"] == "t2").to_numpy(float)
    coef, se = _fit_lifelines(np.log(t), np.ones(t.size, bool), np.column_stack([a, k]))
    # Closed form by least squares, and its Wald se (sigma's MLE: RSS / n).
    design = np.column_stack([np.ones(t.size), a, k])
    beta = np.linalg.lstsq(design, np.log(t), rcond=None)[0]
    rss = np.sum((np.log(t) - design @ beta) ** 2)
    assert coef == pytest.approx(beta[1], abs=1e-5)
    assert se == pytest.approx(math.sqrt(np.linalg.inv(design.T @ design)[1, 1] * rss / t.size),
                               rel=1e-3)


def test_interval_covers_within_two_points_of_95_at_three_seeds():
    """3 vs 3 log-normal seeds with the spread of our x - y seeds (sd 0.125 on log steps):
    the 95% interval covers the true ratio within 95 ± 2% of 4,000 simulated comparisons."""
    rng = np.random.default_rng(7)
    true, covered, reps = 0.8, 0, 4000
    in_a = np.arange(6) < 3
    for _ in range(reps):
        log_t = np.log(4000.0) + rng.normal(0, 0.125, 6) + np.where(in_a, math.log(true), 0)
        out = time_ratio(np.round(np.exp(log_t)), np.ones(6, bool), in_a)
        covered += out.ci_low <= true <= out.ci_high
    assert abs(covered / reps - 0.95) <= 0.02


def test_undefined_time_ratios_say_why():
    one = time_ratio([1000.0, 3000.0], [True, True], [True, False])
    assert not one.ok and "too few" in one.reason  # one seed each: no interval
    never = time_ratio([7500.0] * 3 + [2000.0, 2100, 2200], [False] * 3 + [True] * 3,
                       np.arange(6) < 3)
    assert not never.ok and "no seed of the cell" in never.reason
    flat = time_ratio([1000.0] * 3 + [2000.0] * 3, [True] * 6, np.arange(6) < 3)
    assert not flat.ok and "no spread" in flat.reason


def test_ten_against_ten_reads_asymptotic_wherever_the_p_is():
    """C(20, 10) relabellings exceed the exact limit: every printed p says "asymptotic" and
    the reading never calls a p exact."""
    from groklab.report import study

    runs = _study(effect=0.7, tasks=("t1", "t2"), seeds=10)
    per_task = compare_cells(runs, "value", "default")
    assert (per_task["logrank_method"] == "asymptotic").all()
    assert (per_task["decided_by"] == "log-rank, asymptotic").all()  # its floor is < 0.05
    across = compare_study(runs, "value", "default")
    assert across["logrank_method"].tolist() == ["Monte-Carlo permutation (20000 relabellings)"]
    text = "\n".join(study.comparison_reading(per_task, across))
    table = [line for line in text.splitlines() if line.startswith(("| t1 ", "| t2 "))]
    assert len(table) == 2 and all("(asymptotic; floor" in line for line in table)
    assert "asymptotic (the normal approximation) in 2 of 2 rows" in text
    assert "exact" not in text.replace("exact permutation (over every relabelling", "")

"""Tests for groklab.metrics against hand-derived or independently computed oracles."""

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import optimize, special, stats

from groklab.metrics import (
    EXACT_LIMIT,
    Analysis,
    Collapse,
    Crossing,
    ErfFit,
    absolute_sharpness,
    aggregate,
    collapse,
    comparison_verdict,
    crossings,
    erf_params_for_chance,
    fit_erf,
    grok_delay,
    kaplan_meier,
    loglog_fit,
    logrank,
    max_acc_rate,
    median_difference,
    post_threshold_sd,
    rank_trend,
    relative_gap,
    relative_sharpness,
    steps_to_threshold,
    summarize_history,
    trend,
)


def erf_curve(t, a, s, tau, b):
    return a * special.erf(s * (np.asarray(t, float) - tau)) + b


def fit_obj(a=0.5, s=0.01, tau=100.0, b=0.5, ok=True):
    return ErfFit(a=a, s=s, tau=tau, b=b, r2=1.0, ok=ok, reason="" if ok else "x")


# --- steps_to_threshold ---------------------------------------------------------------------


def test_steps_to_threshold_first_crossing():
    steps = [0, 10, 20, 30, 40]
    acc = [0.1, 0.5, 0.995, 0.2, 1.0]  # first crossing at 20 even though it dips later
    assert steps_to_threshold(steps, acc, 0.99) == Crossing(step=20, reached=True)


def test_steps_to_threshold_equality_counts():
    assert steps_to_threshold([0, 5, 10], [0.0, 0.75, 1.0], threshold=0.75) == Crossing(5, True)


def test_steps_to_threshold_censored_at_budget_and_default_budget():
    steps, acc = [0, 100, 200], [0.1, 0.5, 0.98]
    assert steps_to_threshold(steps, acc, 0.99, budget=7500) == Crossing(7500, False)
    assert steps_to_threshold(steps, acc, 0.99) == Crossing(200, False)


# --- max_acc_rate ---------------------------------------------------------------------------


def test_max_acc_rate_piecewise_linear():
    steps = np.arange(0, 3001, 10)
    acc = np.clip((steps - 1000) / 500, 0.0, 1.0)  # slope 1/500 between 1000 and 1500
    assert max_acc_rate(steps, acc, window=100) == pytest.approx(1 / 500, rel=1e-9)


def test_max_acc_rate_flat_and_degenerate():
    steps = np.arange(0, 1000, 10)
    assert max_acc_rate(steps, np.full(steps.size, 0.3)) == 0.0
    assert max_acc_rate([0], [0.5]) == 0.0
    assert max_acc_rate([0, 10, 20], [0.0, 0.5, 1.0], window=100) == 0.0  # no window fits


# --- fit_erf --------------------------------------------------------------------------------

STEPS = np.arange(0, 10001, 50)


def noisy(a, s, tau, b, seed=0, sd=0.02):
    rng = np.random.default_rng(seed)
    return erf_curve(STEPS, a, s, tau, b) + rng.normal(0.0, sd, STEPS.size)


@pytest.mark.parametrize("fixed", [False, True])
def test_fit_erf_recovers_parameters(fixed):
    a, s, tau, b = 0.5, 0.002, 4000.0, 0.5
    kw = {"a": a, "b": b} if fixed else {}
    fit = fit_erf(STEPS, noisy(a, s, tau, b), **kw)
    assert fit.ok, fit.reason
    # tolerances: tau within 2%, s within 15%, asymptotes within 0.03
    assert fit.tau == pytest.approx(tau, rel=0.02)
    assert fit.s == pytest.approx(s, rel=0.15)
    assert fit.a == pytest.approx(a, abs=0.03)
    assert fit.b == pytest.approx(b, abs=0.03)
    assert fit.r2 > 0.95
    assert fit.reason == ""


def test_fit_erf_parity_like_from_chance_half():
    a, b = erf_params_for_chance(0.5)
    assert (a, b) == (0.25, 0.75)
    fit = fit_erf(STEPS, noisy(a, 0.001, 6000.0, b, seed=1), a=a, b=b)
    assert fit.ok, fit.reason
    assert fit.tau == pytest.approx(6000.0, rel=0.02)
    assert fit.s == pytest.approx(0.001, rel=0.15)
    assert (fit.a, fit.b) == (a, b)  # held fixed


def test_fit_erf_flat_curve_fails_with_reason():
    fit = fit_erf(STEPS, noisy(0.0, 0.002, 4000.0, 0.5, sd=0.005))
    assert not fit.ok
    assert "flat" in fit.reason


def test_fit_erf_nan_and_too_few_points():
    acc = erf_curve(STEPS, 0.5, 0.002, 4000.0, 0.5)
    acc[10] = np.nan
    fit = fit_erf(STEPS, acc)
    assert not fit.ok and "nan" in fit.reason
    assert not fit_erf([0, 1, 2], [0.0, 0.5, 1.0]).ok


def test_fit_erf_transition_outside_observed_steps():
    # only the very start of a rise centred far beyond the last step is visible
    acc = erf_curve(STEPS, 0.5, 0.0003, 14000.0, 0.5)
    fit = fit_erf(STEPS, acc, a=0.5, b=0.5, min_rise=0.01)
    assert not fit.ok
    assert "outside" in fit.reason


def test_fit_erf_noise_is_not_a_good_fit():
    """Uniform noise: the fit is rejected for its R^2, and the R^2 it reports is that of its
    own parameters, recomputed here by hand."""
    rng = np.random.default_rng(3)
    y = rng.uniform(0, 1, STEPS.size)
    fit = fit_erf(STEPS, y, a=0.5, b=0.5)
    assert not fit.ok and fit.reason.startswith("poor fit: R^2=")
    pred = 0.5 * special.erf(fit.s * (STEPS - fit.tau)) + 0.5
    r2 = 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
    assert fit.r2 == pytest.approx(r2, rel=1e-9) and r2 < 0.9


def test_erffit_predict_and_to_dict():
    f = fit_obj(a=0.4, s=0.01, tau=50.0, b=0.6)
    t = np.array([0.0, 50.0, 120.0])
    np.testing.assert_allclose(f.predict(t), 0.4 * special.erf(0.01 * (t - 50.0)) + 0.6)
    d = f.to_dict()
    assert d == {"a": 0.4, "s": 0.01, "tau": 50.0, "b": 0.6, "r2": 1.0, "ok": True, "reason": ""}
    assert all(type(v) in (float, bool, str) for v in d.values())


# --- derived fit metrics --------------------------------------------------------------------


def test_relative_gap_and_sharpness():
    train, val = fit_obj(s=0.02, tau=100.0), fit_obj(s=0.005, tau=300.0)
    assert relative_gap(train, val) == pytest.approx(2.0)
    assert relative_sharpness(train, val) == pytest.approx(0.25)
    assert math.isnan(relative_gap(fit_obj(tau=0.0), val))
    assert math.isnan(relative_gap(train, fit_obj(ok=False)))
    assert math.isnan(relative_sharpness(fit_obj(ok=False), val))


def test_absolute_sharpness_matches_finite_difference_slope():
    a, s, tau, b = 0.45, 0.003, 2000.0, 0.55
    h = 1e-3
    slope = (erf_curve(tau + h, a, s, tau, b) - erf_curve(tau - h, a, s, tau, b)) / (2 * h)
    assert absolute_sharpness(fit_obj(a, s, tau, b)) == pytest.approx(float(slope), rel=1e-6)
    assert math.isnan(absolute_sharpness(fit_obj(ok=False)))


# --- aggregate ------------------------------------------------------------------------------


def test_aggregate_matches_numpy_and_scipy():
    v = np.array([1200.0, 1500.0, 900.0, 2100.0, 1700.0])
    agg = aggregate(v)
    lo, hi = stats.t.interval(0.95, df=v.size - 1, loc=v.mean(), scale=v.std(ddof=1) / np.sqrt(5))
    assert agg.mean == pytest.approx(v.mean())
    assert agg.sd == pytest.approx(v.std(ddof=1))
    assert (agg.ci_low, agg.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    assert (agg.n, agg.n_reached, agg.frac_reached, agg.censored) == (5, 5, 1.0, False)


def test_aggregate_keeps_censored_seeds_and_gives_no_interval_around_the_bound():
    agg = aggregate([100, 200, 7500], reached=[True, True, False])
    assert agg.mean == pytest.approx(7800 / 3)
    assert agg.sd == pytest.approx(np.std([100, 200, 7500], ddof=1))
    assert math.isnan(agg.ci_low) and math.isnan(agg.ci_high)  # a bound has no interval
    assert (agg.n, agg.n_reached, agg.censored) == (3, 2, True)
    assert agg.frac_reached == pytest.approx(2 / 3)
    d = agg.to_dict()
    assert type(d["n"]) is int and type(d["censored"]) is bool and type(d["mean"]) is float


def test_aggregate_single_seed_has_nan_spread():
    agg = aggregate([42.0])
    assert agg.mean == 42.0 and agg.n == 1
    assert math.isnan(agg.sd) and math.isnan(agg.ci_low) and math.isnan(agg.ci_high)


# --- summarize_history ----------------------------------------------------------------------


def test_summarize_history_synthetic_grokking_run():
    chance = 1 / 97
    a, b = (1 - chance) / 2, (1 + chance) / 2
    steps = np.arange(0, 20001, 100)
    s, tau_train, tau_val = 0.002, 1000.0, 8000.0
    train = erf_curve(steps, a, s, tau_train, b)
    val = erf_curve(steps, a, s / 2, tau_val, b)
    history = pd.DataFrame({
        "step": steps, "train_loss": 1 - train, "train_acc": train, "val_loss": 1 - val,
        "val_acc": val, "clean_val_acc": val, "lr": 1e-3,
    })
    out = summarize_history(history, budget=20000, chance=chance)

    # acc >= 0.99  <=>  t >= tau + erfinv((0.99 - b) / a) / s ; then round up to the eval grid
    def crossing(tau, s_):
        t_star = tau + special.erfinv((0.99 - b) / a) / s_
        return int(math.ceil(t_star / 100) * 100)

    assert out["steps_to_99"] == crossing(tau_val, s / 2) and out["grokked"] is True
    assert out["steps_to_99_train"] == crossing(tau_train, s) and out["train_reached"] is True
    assert out["train_fit_ok"] and out["val_fit_ok"]
    assert out["train_fit_tau"] == pytest.approx(tau_train, rel=0.02)
    assert out["val_fit_tau"] == pytest.approx(tau_val, rel=0.02)
    assert out["relative_gap"] > 0
    assert out["relative_gap"] == pytest.approx(tau_val / tau_train - 1, rel=0.05)
    assert out["relative_sharpness"] == pytest.approx(0.5, rel=0.05)
    assert out["final_val_acc"] == pytest.approx(val[-1])
    assert out["final_train_loss"] == pytest.approx(1 - train[-1])
    assert all(np.isscalar(v) for v in out.values())
    # The delay between the crossings defines grokking; the curve never falls back.
    delay = crossing(tau_val, s / 2) - crossing(tau_train, s)
    assert out["grok_delay_steps"] == delay > 500 and out["groks"] is True
    assert out["grok_delay_censored"] is False and out["collapsed"] is False
    # Not augmented: no clean fit, said so; augmented: the clean curve is fitted too.
    assert not out["clean_fit_ok"] and "not augmented" in out["clean_fit_reason"]
    assert math.isnan(out["relative_gap_clean"])
    clean = erf_curve(steps, a, s / 2, 9000.0, b)
    aug = summarize_history(history.assign(clean_val_acc=clean), budget=20000, chance=chance,
                            augmented=True)
    assert aug["clean_fit_ok"] and aug["clean_fit_tau"] == pytest.approx(9000.0, rel=0.02)
    assert aug["relative_gap_clean"] == pytest.approx(9000.0 / tau_train - 1, rel=0.05)
    # A longer minimum delay than this run's makes it a prompt generaliser, not a grokker.
    prompt = summarize_history(history, budget=20000, chance=chance,
                               analysis=Analysis(grok_delay=delay + 10))
    assert prompt["groks"] is False and prompt["grokked"] is True


def test_steps_to_95_beside_99_and_the_collapse_share():
    """Grokfast's 95% crossing by hand on a step curve; censored at the budget when never
    reached; the largest softmax-collapse share and the last one, NaN for old histories."""
    steps = np.arange(0, 1001, 100)
    val = np.array([0.01, 0.2, 0.5, 0.94, 0.95, 0.97, 0.989, 0.99, 1.0, 1.0, 1.0])
    history = pd.DataFrame({"step": steps, "train_acc": np.ones(11), "val_acc": val,
                            "train_loss": 0.0, "val_loss": 0.0, "clean_val_acc": val,
                            "softmax_collapse": [0, 0, 0, .1, .3, .2, .2, .5, .4, .4, .25]})
    out = summarize_history(history, budget=5000, chance=1 / 97)
    assert (out["steps_to_95"], out["reached_95"]) == (400, True)
    assert (out["steps_to_99"], out["grokked"]) == (700, True)
    assert out["max_softmax_collapse"] == 0.5 and out["final_softmax_collapse"] == 0.25
    never = summarize_history(history.assign(val_acc=0.9 * val), budget=5000, chance=1 / 97)
    assert (never["steps_to_95"], never["reached_95"]) == (5000, False)
    old = summarize_history(history.drop(columns="softmax_collapse"), budget=5000,
                            chance=1 / 97)
    assert math.isnan(old["max_softmax_collapse"]) and math.isnan(old["final_softmax_collapse"])


def test_summarize_history_applies_the_fit_floor():
    """A fit is ok exactly when its R^2 reaches ``analysis.min_fit_r2``."""
    chance = 1 / 97
    steps = np.arange(0, 3001, 10)
    # A slow two-stage rise: not one erf, so its fit's R^2 is well below 1.
    val = np.clip(0.3 * steps / 1500, 0, 0.3) + 0.7 * (steps > 2400)
    history = pd.DataFrame({"step": steps, "train_acc": np.minimum(1, steps / 300),
                            "val_acc": val, "clean_val_acc": val, "train_loss": 0.0,
                            "val_loss": 0.0})
    # The best R^2 of this erf family (a, b fixed by chance), by scipy from many starts.
    a, b = (1 - chance) / 2, (1 + chance) / 2

    def curve(t, s, tau):
        return a * special.erf(s * (t - tau)) + b

    sse = min(np.sum((val - curve(steps, *optimize.curve_fit(
        curve, steps, val, p0=[s0, tau0], bounds=([0, -3000], [np.inf, 6000]),
        maxfev=5000)[0])) ** 2)
        for s0 in (1e-4, 1e-3, 1e-2, 1e-1) for tau0 in (500, 1500, 2400, 2800))
    r2 = 1 - sse / np.sum((val - val.mean()) ** 2)
    assert 0.5 < r2 < 0.99
    assert summarize_history(history, budget=3000, chance=chance, analysis=Analysis(
        min_fit_r2=0.0))["val_fit_r2"] == pytest.approx(r2, abs=1e-3)
    for floor, ok in ((r2 - 2e-3, True), (r2 + 2e-3, False)):
        out = summarize_history(history, budget=3000, chance=chance,
                                analysis=Analysis(min_fit_r2=floor))
        assert out["val_fit_ok"] is ok and out["val_fit_r2"] == pytest.approx(r2, abs=1e-3)
        assert math.isnan(out["relative_gap"]) is not ok


def test_analysis_defaults_are_params_yaml():
    """`groklab run` (outside the pipeline) uses the defaults: they must be params.yaml's."""
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    assert Analysis.from_params(params) == Analysis()


# --- grokking, delay and collapse ---------------------------------------------------------


@pytest.mark.parametrize("train, val, delay, censored, groks", [
    (Crossing(100, True), Crossing(700, True), 600.0, False, True),
    (Crossing(100, True), Crossing(600, True), 500.0, False, True),  # exactly the minimum
    (Crossing(100, True), Crossing(590, True), 490.0, False, False),  # prompt: no grokking
    (Crossing(100, True), Crossing(7500, False), 7400.0, True, False),  # never: a lower bound
    (Crossing(7500, False), Crossing(300, True), math.nan, False, False),  # training never fit
    (Crossing(400, True), Crossing(200, True), -200.0, False, False),  # validation first
])
def test_grok_delay(train, val, delay, censored, groks):
    out = grok_delay(train, val, 500)
    assert (out.censored, out.groks) == (censored, groks)
    assert out.steps == pytest.approx(delay, nan_ok=True)


def test_collapse_is_a_fall_below_the_floor_after_reaching_the_threshold():
    steps = [0, 10, 20, 30, 40, 50]
    # Fell to 0.85 and ended there: a collapse; fell and came back to 0.99: a dip.
    assert collapse(steps, [0.1, 0.95, 0.99, 0.95, 0.99, 0.85]) == Collapse(True, 50.0, False)
    assert collapse(steps, [0.1, 0.95, 0.99, 0.95, 0.85, 0.99]) == Collapse(False, 40.0, True)
    assert collapse(steps, [0.1, 0.99, 0.5, 0.95, 0.3, 0.44]) == Collapse(True, 20.0, False)
    fell = collapse(steps, [0.1, 0.5, 0.8, 0.95, 0.99, 0.92])  # dips, but stays above 0.9
    assert not fell.collapsed and not fell.dipped and math.isnan(fell.step)
    assert not collapse(steps, [0.1, 0.2, 0.5, 0.2, 0.1, 0.0]).collapsed  # never reached 0.99
    assert collapse(steps, [0.1, 0.99, 0.5, 0.5, 0.5, 0.5], below=0.6).step == 20.0


def test_a_run_stopped_below_the_floor_is_not_called_collapsed():
    """Ending below the floor is a collapse only when the run had its whole budget; a stop
    rule (train.stop_after_grok) can end it mid-dip, and then the run cannot tell."""
    steps = [0, 100, 200, 300]
    train, val = [0.5, 1.0, 1.0, 1.0], [0.1, 0.995, 0.5, 0.6]  # ends below 0.9 at 300
    ran_out = crossings(steps, train, val, budget=300, analysis=Analysis())
    stopped = crossings(steps, train, val, budget=3000, analysis=Analysis())
    assert (ran_out["collapsed"], ran_out["stopped_below"]) == (True, False)
    assert (stopped["collapsed"], stopped["stopped_below"]) == (False, True)
    assert ran_out["collapse_step"] == stopped["collapse_step"] == 200
    recovered = crossings(steps, train, [0.1, 0.995, 0.5, 0.95], budget=3000,
                          analysis=Analysis())  # stopped early, but above the floor: a dip
    assert (recovered["collapsed"], recovered["stopped_below"], recovered["dipped"]) == (
        False, False, True)


def test_post_threshold_sd():
    acc = [0.1, 0.5, 0.99, 0.97, 1.0, 0.98]
    assert post_threshold_sd(range(6), acc) == pytest.approx(np.std(acc[2:], ddof=1))
    assert math.isnan(post_threshold_sd(range(3), [0.1, 0.2, 0.99]))  # one point after
    assert math.isnan(post_threshold_sd(range(3), [0.1, 0.2, 0.3]))


# --- survival curves and comparisons --------------------------------------------------------

# Freireich et al. (1963) remission times in weeks, 6-MP and placebo groups (event, or False:
# censored), the worked example of Kleinbaum & Klein, "Survival Analysis: A Self-Learning
# Text", ch. 2: Kaplan-Meier S(t) of the 6-MP group and log-rank chi-square 16.79.
SIX_MP = [(6, True), (6, True), (6, True), (6, False), (7, True), (9, False), (10, True),
          (10, False), (11, False), (13, True), (16, True), (17, False), (19, False), (20, False),
          (22, True), (23, True), (25, False), (32, False), (32, False), (34, False), (35, False)]
PLACEBO = [(t, True) for t in (1, 1, 2, 2, 3, 4, 4, 5, 5, 8, 8, 8, 8, 11, 11, 12, 12, 15, 17,
                               22, 23)]
TEXTBOOK_KM = {6: 0.857, 7: 0.807, 10: 0.753, 13: 0.690, 16: 0.627, 22: 0.538, 23: 0.448}


def _split(sample):
    t, e = zip(*sample, strict=True)
    return np.array(t, float), np.array(e, bool)


def test_kaplan_meier_matches_the_textbook_and_scipy():
    t, e = _split(SIX_MP)
    km = kaplan_meier(t, e)
    assert km.times.tolist() == sorted(TEXTBOOK_KM)
    np.testing.assert_allclose(1 - km.fraction, list(TEXTBOOK_KM.values()), atol=5e-4)
    sf = stats.ecdf(stats.CensoredData.right_censored(t, ~e)).sf
    np.testing.assert_allclose(1 - km.at(sf.quantiles), sf.probabilities, rtol=1e-12)
    assert km.at([0, 5.9, 6, 100]).tolist() == pytest.approx([0, 0, 3 / 21, 1 - 0.448],
                                                            abs=5e-4)


def test_kaplan_meier_with_one_budget_is_the_fraction_reached():
    steps = np.array([300, 120, 7500, 90, 7500, 120])
    reached = steps < 7500
    km = kaplan_meier(steps, reached)
    for t in (0, 89, 90, 119, 120, 299, 300, 7500):
        assert km.at(t) == pytest.approx(np.mean(reached & (steps <= t)))


def test_logrank_matches_the_textbook_and_scipy():
    (t1, e1), (t2, e2) = _split(SIX_MP), _split(PLACEBO)
    test = logrank(t1, e1, t2, e2)
    assert test.z ** 2 == pytest.approx(16.79, abs=0.005)  # the textbook's chi-square
    assert (test.observed, test.expected) == (9, pytest.approx(19.25, abs=0.005))
    ref = stats.logrank(stats.CensoredData.right_censored(t1, ~e1),
                        stats.CensoredData.right_censored(t2, ~e2))
    assert test.z == pytest.approx(ref.statistic) and test.p_asymptotic == pytest.approx(
        ref.pvalue)
    assert math.isnan(test.p_exact)  # C(42, 21) relabellings: too many to enumerate
    assert test.p == test.p_asymptotic


def _scipy_z(times, events, in_a):
    a = stats.CensoredData.right_censored(times[in_a], ~events[in_a])
    b = stats.CensoredData.right_censored(times[~in_a], ~events[~in_a])
    return stats.logrank(a, b).statistic


@pytest.mark.parametrize("a, ra, b, rb", [
    ([100, 150, 200], [1, 1, 1], [400, 500, 7500], [1, 1, 0]),
    ([300, 7500, 7500], [1, 0, 0], [200, 250, 260, 7500], [1, 1, 1, 0]),
    ([100, 100, 200, 300], [1, 1, 1, 1], [100, 250, 300], [1, 1, 1]),  # ties across samples
])
def test_logrank_exact_p_is_the_share_of_relabellings_at_least_as_extreme(a, ra, b, rb):
    t = np.array(a + b, float)
    e = np.array(ra + rb, bool)
    test = logrank(a, np.array(ra, bool), b, np.array(rb, bool))
    observed = abs(_scipy_z(t, e, np.arange(t.size) < len(a)))
    labels = itertools.combinations(range(t.size), len(a))
    zs = [abs(_scipy_z(t, e, np.isin(np.arange(t.size), chosen))) for chosen in labels]
    assert test.p_exact == pytest.approx(np.mean(np.array(zs) >= observed - 1e-9))
    assert abs(test.z) == pytest.approx(observed)


def test_logrank_exact_p_of_three_against_three():
    # Complete separation: the asymptotic p (~0.025) overstates; exactly 2 of 20 labellings.
    test = logrank([100, 200, 300], [True] * 3, [400, 500, 600], [True] * 3)
    assert test.p_exact == pytest.approx(0.1) and test.p_asymptotic < 0.05 and test.z > 0
    assert comparison_verdict(test) == "not distinguishable"
    none = logrank([7500] * 3, [False] * 3, [7500] * 3, [False] * 3)  # no event at all
    assert (none.z, none.p) == (0.0, 1.0)
    other = logrank([100, 200, 300], [True] * 3, [7500] * 3, [False] * 3, same_budget=False)
    assert math.isnan(other.p_exact) and other.p == other.p_asymptotic


def test_comparison_verdict_follows_the_sign_and_the_p_value():
    fast = [100, 110, 120, 130, 140]
    slow = [400, 410, 420, 430, 7500]
    slow_reached = [True, True, True, True, False]
    faster = logrank(fast, [True] * 5, slow, slow_reached)
    assert faster.p_exact == pytest.approx(2 / math.comb(10, 5))
    assert comparison_verdict(faster) == "faster"
    assert comparison_verdict(logrank(slow, slow_reached, fast, [True] * 5)) == "slower"
    assert comparison_verdict(faster, alpha=faster.p_exact) == "not distinguishable"


def test_logrank_floor_is_the_smallest_p_any_labelling_gives():
    """The floor against brute force: the p of every labelling, by scipy's z."""
    for a, b in (([100, 200, 300], [400, 500, 600]), ([100, 200], [300, 400, 500, 600]),
                 ([100, 100, 300], [100, 500, 7500])):
        t = np.array(a + b, float)
        e = t < 7500
        test = logrank(a, e[:len(a)], b, e[len(a):])
        zs = np.array([abs(_scipy_z(t, e, np.isin(np.arange(t.size), c)))
                       for c in itertools.combinations(range(t.size), len(a))])
        assert test.p_floor == pytest.approx(min(np.mean(zs >= z - 1e-9) for z in zs))
        assert test.method == "exact permutation"
    assert logrank([1, 2, 3], [True] * 3, [4, 5, 6], [True] * 3).p_floor == pytest.approx(0.1)


def test_ten_against_ten_is_asymptotic_and_says_so():
    """C(20, 10) = 184,756 relabellings: above the limit, so p is the normal one, and the
    method says "asymptotic"; its floor is the normal p of complete separation."""
    a, b = list(range(100, 1100, 100)), list(range(1100, 2100, 100))
    test = logrank(a, [True] * 10, b, [True] * 10)
    assert math.comb(20, 10) > EXACT_LIMIT and math.isnan(test.p_exact)
    assert test.method == "asymptotic" and test.p == test.p_asymptotic
    t = np.array(a + b, float)
    ref = stats.logrank(stats.CensoredData.right_censored(t[:10], np.zeros(10, bool)),
                        stats.CensoredData.right_censored(t[10:], np.zeros(10, bool)))
    assert test.p == pytest.approx(ref.pvalue)  # complete separation: the floor itself
    assert test.p_floor == pytest.approx(ref.pvalue)


def test_median_difference_of_censored_medians_is_a_bound_without_interval():
    low = median_difference([100, 7500, 7500], [True, False, False], [200, 300, 400], [True] * 3)
    assert (low.diff, low.bound) == (7500 - 300, ">=")
    high = median_difference([200, 300, 400], [True] * 3, [100, 7500, 7500], [True, False, False])
    assert (high.diff, high.bound) == (300 - 7500, "<=")
    both = median_difference([7500] * 3, [False] * 3, [7500] * 3, [False] * 3)
    assert both.bound == "undefined" and math.isnan(both.diff)
    # A censored seed that is not the median leaves the difference exact.
    exact = median_difference([100, 200, 7500], [True, True, False], [300] * 3, [True] * 3)
    assert (exact.diff, exact.bound) == (-100, "")


# --- across cells -------------------------------------------------------------------------


def test_loglog_fit_recovers_a_power_law():
    rng = np.random.default_rng(0)
    x = np.geomspace(0.1, 100, 60)
    y = 3 * x ** -0.5 * np.exp(rng.normal(0, 0.05, x.size))
    fit = loglog_fit(x, y)
    slope, intercept = np.polyfit(np.log10(x), np.log10(y), 1)
    r, _ = stats.pearsonr(np.log10(x), np.log10(y))
    assert fit.slope == pytest.approx(slope) and fit.intercept == pytest.approx(intercept)
    assert fit.r == pytest.approx(r)
    assert fit.slope == pytest.approx(-0.5, abs=0.03)
    assert fit.intercept == pytest.approx(math.log10(3), abs=0.03)
    assert fit.r < -0.99 and fit.n == 60 and fit.n_nonpositive == fit.n_missing == 0
    assert fit.predict([1.0, 100.0]) == pytest.approx(10 ** intercept * np.array([1.0, 100.0])
                                                      ** slope)


def test_loglog_fit_excludes_and_counts_nonpositive_points():
    rng = np.random.default_rng(1)
    x = np.geomspace(0.5, 50, 20)
    y = 3 * x ** -0.5 * np.exp(rng.normal(0, 0.05, x.size))
    clean = loglog_fit(x, y)
    fit = loglog_fit(np.append(x, [0.0, -1.0, 2.0, math.nan]),
                     np.append(y, [1.0, 1.0, -2.0, 1.0]))
    assert (fit.n, fit.n_nonpositive, fit.n_missing) == (20, 3, 1)
    assert (fit.slope, fit.intercept, fit.r) == pytest.approx(
        (clean.slope, clean.intercept, clean.r))
    few = loglog_fit([1.0, 2.0, -1.0], [1.0, 2.0, 3.0])
    assert not few.ok and few.n == 2 and few.n_nonpositive == 1


def test_trend_and_rank_trend():
    assert trend([3, 1, 2], [30, 10, 20]).direction == "rises"
    assert trend([1, 2, 3], [5, 4, float("nan")]) == trend([1, 2], [5, 4])
    assert trend([1, 2, 3], [5, 4, 1]).direction == "falls"
    assert trend([1, 2, 3], [1, 3, 2]).direction == "not monotonic"
    assert trend([1], [1]).direction == "too few"
    x = [1, 2, 3, 4, 5, 6, 7, 8]
    y = [2, 1, 4, 3, 6, 5, 8, 7]  # d = ±1 everywhere: rho = 1 - 6*8/(8*63) = 0.905
    t = rank_trend(x, y)
    assert t.rho == pytest.approx(1 - 6 * 8 / (8 * 63)) and t.direction == "rises"
    assert rank_trend(x, [-v for v in y]).direction == "falls"
    assert rank_trend([1, 2], [1, 2]).direction is None


def test_rank_trend_p_is_exact_for_few_points():
    """Three points in perfect order: 2 of the 3! orderings are as extreme, p = 1/3 (scipy's
    t approximation says 0). Eight points against brute force over every ordering."""
    three = rank_trend([1, 2, 3], [10, 20, 30])
    assert three.rho == 1.0 and three.p_value == pytest.approx(1 / 3)
    assert three.direction is None  # cannot reach 0.05 with three points
    x = [1, 2, 3, 4, 5, 6, 7, 8]
    y = [2, 1, 4, 3, 6, 5, 8, 7]
    # No ties: rho = 1 - 6 sum d^2 / (n (n^2 - 1)) for every ordering of y against x.
    d2 = np.array([sum((i - j) ** 2 for i, j in zip(x, perm, strict=True))
                   for perm in itertools.permutations(y)])
    rhos = 1 - 6 * d2 / (8 * 63)
    rho = 1 - 6 * 8 / (8 * 63)
    assert rank_trend(x, y).p_value == pytest.approx(np.mean(np.abs(rhos) >= abs(rho) - 1e-12))
    assert math.isnan(rank_trend([1, 2, 3], [5, 5, 5]).rho)  # constant: no correlation

"""Tests for groklab.metrics against hand-derived or independently computed oracles."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from groklab.metrics import (
    Crossing,
    ErfFit,
    absolute_sharpness,
    aggregate,
    erf_params_for_chance,
    fit_erf,
    max_acc_rate,
    relative_gap,
    relative_sharpness,
    steps_to_threshold,
    summarize_history,
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
    rng = np.random.default_rng(3)
    fit = fit_erf(STEPS, rng.uniform(0, 1, STEPS.size), a=0.5, b=0.5)
    assert not fit.ok and fit.reason


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


def test_aggregate_keeps_censored_seeds():
    agg = aggregate([100, 200, 7500], reached=[True, True, False])
    assert agg.mean == pytest.approx(7800 / 3)
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

"""Tests for the solvable linear student-teacher model against independent oracles."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.linalg import expm

from groklab.linear_teacher import (
    LinearTeacherConfig,
    closed_form,
    midpoint_step,
    sample_problem,
    simulate,
    sweep,
)

# Gradient flow vs discrete GD differs at first order in lr: the relative loss error is about
# 1.5 * lr here, so lr = 1e-3 must agree to LOSS_RTOL; losses below LOSS_FLOOR are left out,
# since GD's residual stalls at rounding level while the closed form keeps decaying.
LOSS_RTOL, LOSS_FLOOR = 1e-2, 1e-10
TRAIN_ACC_ATOL, VAL_ACC_ATOL = 0.02, 5e-3  # train: a few of the 200 examples may flip


def _max_rel_loss_error(a: dict, b: dict) -> float:
    errs = []
    for key in ("train_loss", "val_loss"):
        keep = a[key] > LOSS_FLOOR
        errs.append(np.max(np.abs(a[key] - b[key])[keep] / a[key][keep]))
    return float(max(errs))


@pytest.mark.parametrize("d_out", [1, 3])
def test_closed_form_matches_gradient_descent(d_out: int) -> None:
    cfg = LinearTeacherConfig(
        d_in=100, lam=0.5, d_out=d_out, lr=1e-3, init_scale=0.5, steps=20_000, n_points=60
    )
    flow, gd = closed_form(cfg), simulate(cfg)
    np.testing.assert_array_equal(flow["step"], gd["step"])
    assert _max_rel_loss_error(flow, gd) < LOSS_RTOL
    assert np.max(np.abs(flow["train_acc"] - gd["train_acc"])) <= TRAIN_ACC_ATOL
    assert np.max(np.abs(flow["val_acc"] - gd["val_acc"])) <= VAL_ACC_ATOL
    assert flow["val_acc"][0] < 0.1 and flow["val_acc"][-1] > 0.99


def test_closed_form_is_the_small_lr_limit_of_gd() -> None:
    """At fixed lr * steps, the gap between flow and GD shrinks roughly in proportion to lr."""
    errors = []
    for lr in (4e-3, 1e-3):
        cfg = LinearTeacherConfig(d_in=60, lam=0.6, lr=lr, steps=round(20 / lr), n_points=40)
        errors.append(_max_rel_loss_error(closed_form(cfg), simulate(cfg)))
    assert errors[1] < errors[0] / 2.5
    assert errors[1] < LOSS_RTOL


def test_simulate_is_exact_discrete_gd() -> None:
    cfg = LinearTeacherConfig(d_in=30, lam=0.7, lr=0.05, init_scale=1.0, steps=300, n_points=8)
    x, teacher, student0 = sample_problem(cfg)
    step_matrix = np.eye(cfg.d_in) - 2 * cfg.lr * x.T @ x / cfg.n_train
    gd = simulate(cfg)
    for i, n in enumerate(gd["step"]):
        d_n = np.linalg.matrix_power(step_matrix, int(n)) @ (student0 - teacher)
        assert gd["val_loss"][i] == pytest.approx(float(np.sum(d_n**2)), rel=1e-9)
        assert gd["train_loss"][i] == pytest.approx(float(np.mean((x @ d_n) ** 2)), rel=1e-9)


def test_accuracies_match_monte_carlo_and_direct_errors() -> None:
    cfg = LinearTeacherConfig(d_in=50, lam=0.8, lr=0.01, init_scale=0.3, steps=20_000)
    curves = closed_form(cfg)
    x, teacher, student0 = sample_problem(cfg)
    sigma = x.T @ x / cfg.n_train
    rng = np.random.default_rng(123)
    n_test = 200_000
    mid = [int(np.argmin(np.abs(curves["val_acc"] - p))) for p in (0.3, 0.6)]
    for i in [*mid, len(curves["step"]) - 1]:
        d_n = expm(-2 * cfg.lr * curves["step"][i] * sigma) @ (student0 - teacher)
        test_err = rng.standard_normal((n_test, cfg.d_in)) @ d_n
        p = curves["val_acc"][i]
        mc_acc = np.mean(test_err**2 < cfg.threshold)
        assert abs(mc_acc - p) < 4 * np.sqrt(max(p * (1 - p), 1e-4) / n_test)
        assert curves["val_loss"][i] == pytest.approx(np.mean(test_err**2), rel=0.02)
        train_acc = np.mean((x @ d_n) ** 2 < cfg.threshold)
        assert curves["train_acc"][i] == pytest.approx(train_acc, abs=1.5 / cfg.n_train)


@pytest.mark.parametrize("lam", [1.0, 1.5, 0.0, -0.2])
def test_lam_outside_unit_interval_is_rejected(lam: float) -> None:
    with pytest.raises(ValueError, match=r"lam=.*\(0, 1\)"):
        LinearTeacherConfig(lam=lam)


@pytest.mark.parametrize(
    "field, value", [("lr", 0.0), ("lr", 0.3), ("threshold", 0.0), ("n_points", 1)]
)
def test_other_invalid_fields_are_named(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(LinearTeacherConfig(), **{field: value})


def test_validation_is_delayed_more_as_lam_grows() -> None:
    gaps = []
    for _, c in sweep([0.5, 0.8, 0.95], LinearTeacherConfig(d_in=200)):
        for acc in (c["train_acc"], c["val_acc"]):
            assert acc[0] < 0.1 and acc[-1] > 0.99
        train_mid = midpoint_step(c["step"], c["train_acc"])
        val_mid = midpoint_step(c["step"], c["val_acc"])
        assert 10 < train_mid < val_mid
        gaps.append(val_mid / train_mid - 1)
    assert np.all(np.diff(gaps) > 0), gaps

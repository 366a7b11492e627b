"""Grokfast's filters, ⊥Grad and StableMax against independent implementations on small
tensors, their registry entries, and a real run where a large λ changes the trajectory."""

import functools
import math
from collections import deque

import numpy as np
import pandas as pd
import pytest
import torch
from pandas.testing import assert_frame_equal
from registry import PARAMS
from test_graphed import CPU, _Ops, graphed_loop
from test_train import TINY

from groklab import params as P
from groklab.config import ConfigError, OptimConfig
from groklab.gradients import (
    GradientTransform,
    build_gradient_transform,
    effective_lr_gain,
    orthogonal_to_weights,
)
from groklab.losses import LOSSES, softmax_collapse, stablemax_cross_entropy
from groklab.report import accelerators as acc
from groklab.train import train

EMA = OptimConfig(grad_filter="ema", alpha=0.9, lamb=2.0)
MA = OptimConfig(grad_filter="ma", window=3, lamb=5.0)


def feed(cfg: OptimConfig, grads: list[list[float]]) -> tuple[list[list[float]], list[float]]:
    """The transformed gradients of one (1, n) parameter fed ``grads`` one update after
    another (weights fixed at 1), and the filter's state after the last."""
    p = torch.nn.Parameter(torch.ones(1, len(grads[0])))
    t = GradientTransform(cfg, [p])
    out = []
    for g in grads:
        p.grad = torch.tensor([g])
        t()
        out.append(p.grad[0].tolist())
    state = t.ema[0][0].tolist() if cfg.grad_filter == "ema" else t.total[0][0].tolist()
    return out, state


def flat(rows: list[list[float]]) -> list[float]:
    return [x for row in rows for x in row]


GRADS = [[1.0, -2.0], [0.5, 0.0], [3.0, 1.0], [-1.0, 4.0], [2.0, 2.0], [0.0, -1.0]]


def test_ema_filter_state_after_k_updates_by_hand():
    """Grokfast's gradfilter_ema: the average starts at the first gradient."""
    alpha, lamb = 0.9, 2.0
    e = list(GRADS[0])
    want = []
    for g in GRADS:
        e = [alpha * ei + (1 - alpha) * gi for ei, gi in zip(e, g, strict=True)]
        want.append([gi + lamb * ei for gi, ei in zip(g, e, strict=True)])
    got, state = feed(EMA, GRADS)
    assert flat(got) == pytest.approx(flat(want), rel=1e-6)
    assert state == pytest.approx(e, rel=1e-6)


def test_ma_filter_adds_the_window_mean_once_the_window_is_full():
    """Grokfast's gradfilter_ma with warm-up: nothing added before `window` gradients."""
    window, lamb = 3, 5.0
    seen: deque = deque(maxlen=window)
    want = []
    for g in GRADS:
        seen.append(g)
        if len(seen) < window:
            want.append(list(g))
        else:
            mean = [sum(col) / window for col in zip(*seen, strict=True)]
            want.append([gi + lamb * m for gi, m in zip(g, mean, strict=True)])
    got, total = feed(MA, GRADS)
    assert flat(got) == pytest.approx(flat(want), rel=1e-6)
    assert total == pytest.approx([sum(col) for col in zip(*seen, strict=True)], rel=1e-6)


def test_reset_forgets_every_gradient():
    p = torch.nn.Parameter(torch.ones(1, 2))
    for cfg in (EMA, MA):
        t = GradientTransform(cfg, [p])
        for g in GRADS[:4]:
            p.grad = torch.tensor([g])
            t()
        t.reset()
        p.grad = torch.tensor([GRADS[0]])
        t()
        assert p.grad[0].tolist() == pytest.approx(feed(cfg, GRADS[:1])[0][0])


def test_projection_is_orthogonal_per_member_and_keeps_the_norm():
    """⊥Grad: g - (w·g / w·w) w, rescaled to |g|, each member (dim 0) on its own."""
    w = torch.tensor([[[1.0, 2.0], [0.0, -1.0]], [[3.0, 0.0], [1.0, 1.0]]])  # (S=2, 2, 2)
    g = torch.tensor([[[0.5, 1.0], [2.0, 0.0]], [[-1.0, 2.0], [0.0, 3.0]]])
    out = orthogonal_to_weights(w, g)
    for s in range(2):
        wf, gf = w[s].flatten().tolist(), g[s].flatten().tolist()
        dot = sum(a * b for a, b in zip(wf, gf, strict=True))
        ww = sum(a * a for a in wf)
        ortho = [b - dot / ww * a for a, b in zip(wf, gf, strict=True)]
        scale = math.sqrt(sum(b * b for b in gf)) / math.sqrt(sum(o * o for o in ortho))
        assert out[s].flatten().tolist() == pytest.approx([o * scale for o in ortho], rel=1e-6)
        assert sum(a * b for a, b in zip(wf, out[s].flatten().tolist(), strict=True)) == \
            pytest.approx(0.0, abs=1e-6)
    w2 = w.clone()
    w2[1] *= -7.0  # another member's weights change nothing for member 0
    assert torch.equal(orthogonal_to_weights(w2, g)[0], out[0])


def test_stablemax_against_its_formula():
    logits = torch.tensor([[[2.0, -1.0, 0.0, -3.5], [0.25, 4.0, -0.5, 1.0]]])  # (1, 2, 4)
    labels = torch.tensor([[1, 3]])
    got = stablemax_cross_entropy(logits, labels)
    assert got.dtype == torch.float64

    def s(x: float) -> float:
        return x + 1 if x >= 0 else 1 / (1 - x)

    for i, y in enumerate(labels[0].tolist()):
        row = logits[0, i].tolist()
        want = -math.log(s(row[y]) / sum(s(x) for x in row))
        assert got[0, i].item() == pytest.approx(want, rel=1e-12)


def test_softmax_collapse_counts_losses_that_are_exactly_zero():
    """Large logit gaps round softmax's right-class probability to 1 in float32 (loss 0),
    never StableMax's (its tail decays like 1/x, not exp(-x))."""
    logits = torch.tensor([[[200.0, 0.0, 0.0], [2.0, 1.0, 0.0], [0.0, 150.0, 0.0]]])
    labels = torch.tensor([[0, 0, 1]])
    ce = LOSSES["cross_entropy"](logits, labels)
    assert ce[0].tolist()[0] == 0.0 and ce[0].tolist()[1] > 0
    assert softmax_collapse(ce).tolist() == [pytest.approx(2 / 3)]
    assert (LOSSES["stablemax"](logits, labels) > 0).all()


def impulse_response(cfg: OptimConfig, n: int) -> list[float]:
    """The filter's output at each update for a unit gradient at update 0 (after the first
    gradient of 0, so the EMA starts from 0 as its steady state does)."""
    p = torch.nn.Parameter(torch.ones(1, 1))
    t = GradientTransform(cfg, [p])
    warm = cfg.window if cfg.grad_filter == "ma" else 1
    for _ in range(warm):
        p.grad = torch.zeros(1, 1)
        t()
    out = []
    for k in range(n):
        p.grad = torch.full((1, 1), 1.0 if k == 0 else 0.0)
        t()
        out.append(p.grad.item())
    return out


@pytest.mark.parametrize("cfg", [OptimConfig(grad_filter="ema", alpha=0.98, lamb=2.0),
                                 OptimConfig(grad_filter="ma", window=100, lamb=5.0)])
def test_effective_gain_from_the_measured_impulse_response(cfg):
    """Steady gain sum(h) = 1 + λ, noise gain sqrt(sum h²): their ratio is the lr factor."""
    h = impulse_response(cfg, 2000)
    assert sum(h) == pytest.approx(1 + cfg.lamb, rel=1e-3)
    assert effective_lr_gain(cfg) == pytest.approx(sum(h) / math.sqrt(sum(x * x for x in h)),
                                                   rel=1e-3)


def test_lr_matched_controls_scale_the_filtered_runs_lr_by_the_gain():
    for name in ("grokfast_ema", "grokfast_ma"):
        run, control = P.optimizer(PARAMS, name), P.optimizer(PARAMS, f"{name}_lr")
        assert control.grad_filter == "none" and control.kind == run.kind
        assert control.weight_decay == run.weight_decay and control.betas == run.betas
        assert control.lr == pytest.approx(run.lr * effective_lr_gain(run), rel=1e-4)


def test_intervention_settings_are_checked_with_one_line():
    with pytest.raises(ConfigError, match="grad_filter 'ema' needs `alpha`"):
        OptimConfig(grad_filter="ema", lamb=2.0)
    with pytest.raises(ConfigError, match="grad_filter 'none' has no setting `window`"):
        OptimConfig(window=100)
    with pytest.raises(ConfigError, match="lamb=-1 must be a number >= 0"):
        OptimConfig(grad_filter="ma", window=3, lamb=-1)
    bad = {**PARAMS, "optimizers": {**PARAMS["optimizers"], "x": {
        "kind": "adamw", "lr": 0.001, "betas": [0.9, 0.98], "weight_decay": 0.0, "warmup": 0,
        "loss": "hinge"}}}
    with pytest.raises(ConfigError, match="loss='hinge' is not known"):
        P.run_config(bad, "x_plus_y", {"train.optimizer": "x"})


VARIANTS = ["grokfast_ema", "grokfast_ma", "stablemax", "orthograd"]


def variant(name: str, base=TINY):
    """``base`` trained with the registry's variant ``name`` (MA with a short window)."""
    cfg = P.optimizer(PARAMS, name)
    if cfg.grad_filter == "ma":
        cfg = OptimConfig(**{**vars(cfg), "window": 5})
    loss = PARAMS["optimizers"][name].get("loss", "cross_entropy")
    return base.replace(optim=vars(cfg), train={"loss": loss})


SHORT = TINY.replace(train={"steps": 20})


@functools.cache
def plain_run():
    return train(SHORT, [1]).history


@pytest.mark.parametrize("name", VARIANTS)
def test_each_intervention_trains_batched_seeds_as_each_alone(name):
    cfg = variant(name, SHORT)
    together = train(cfg, [0, 1]).history
    alone = train(cfg, [1]).history
    mine = together[together.seed == 1].reset_index(drop=True)
    assert_frame_equal(mine, alone, check_exact=False, atol=1e-5, rtol=1e-4)
    assert not alone.val_loss.equals(plain_run().val_loss)  # it did change something


@pytest.mark.parametrize("name", VARIANTS)
def test_graphed_step_holds_each_intervention_without_host_reads(name):
    """What a CUDA graph needs: no value read back, no data-dependent shape."""
    loop = graphed_loop(variant(name, CPU), [0, 1])
    with _Ops() as ops:
        loop.update_step()
        loop.update_step()
        loop.eval_step()
    forbidden = {"_local_scalar_dense", "item", "nonzero", "unique", "_unique",
                 "_unique2", "unique_dim", "masked_select", "is_nonzero", "equal"}
    assert not ops.names & forbidden
    h = train(variant(name, CPU), [0], engine="graph_eager").history
    assert h.val_loss.notna().all() and (h.step.max() == CPU.train.steps)


def test_no_transform_when_none_is_asked():
    p = [torch.nn.Parameter(torch.ones(1, 1))]
    assert build_gradient_transform(OptimConfig(), p) is None


def test_large_lambda_grokfast_changes_the_trajectory_against_its_lr_matched_control():
    """A real run at p = 23 (x·y, 1-layer Transformer): Grokfast EMA with λ = 5 against
    Adam at the learning rate its gain implies (×4.98), same seeds, so same initialisation,
    split and batches: the training-loss curves part at every evaluation of both seeds (the
    control descends faster early on, where the gradient is mostly signal and the filter's
    gain on Adam's step is near 1, not 4.98). It asserts a change, not a speed-up: two seeds
    carry no test of direction (a sign test's smallest one-sided p is 0.25)."""
    base = TINY.replace(data={"task": "x_mul_y", "p": 23, "train_fraction": 0.5},
                        model={"layers": 1},
                        train={"steps": 80, "batch_size": 64, "eval_every": 20})
    grokfast = OptimConfig(kind="adam_l2", lr=1e-3, weight_decay=0.01, warmup=10,
                           grad_filter="ema", alpha=0.98, lamb=5.0)
    control = OptimConfig(kind="adam_l2", lr=1e-3 * effective_lr_gain(grokfast),
                          weight_decay=0.01, warmup=10)
    curves = {name: train(base.replace(optim=vars(o)), [0, 1]).history
              .pivot(index="seed", columns="step", values="train_loss")
              for name, o in (("grokfast", grokfast), ("control", control))}
    gap = curves["grokfast"] - curves["control"]
    assert (gap[0] == 0).all()  # the same start
    later = gap.drop(columns=0)
    assert (later > 0.05).all().all(), later


def _runs(cells: dict[str, list[tuple[int, bool]]], budget: int = 1000) -> pd.DataFrame:
    rows = []
    for value, seeds in cells.items():
        for seed, (steps, reached) in enumerate(seeds):
            rows.append({"task": "x_mul_y", "optimizer": value, "seed": seed,
                         "budget": budget, "steps_to_95": steps, "reached_95": reached,
                         "steps_to_99": steps + 10, "grokked": reached})
    return pd.DataFrame(rows)


def test_speedup_and_claim_verdict_follow_the_numbers():
    """Speed-up = ratio of medians (numpy), a bound where a median is censored; with 4
    seeds against 4 the exact log-rank test can reach p < 0.05, so the ×44 claim's verdict
    turns from agree to disagree as the numbers do."""
    claim = {"value": "gf", "base": "base", "control": "ctrl", "measure": "steps_to_95",
             "factor": 43.84, "steps": 910, "base_steps": 39890, "source": "Grokfast"}
    fast = _runs({"gf": [(100, True), (120, True), (90, True), (110, True)],
                  "ctrl": [(200, True), (260, True), (240, True), (220, True)],
                  "base": [(900, True), (1000, False), (950, True), (1000, False)]})
    versus = acc.pair_comparisons(fast, [("gf", "ctrl"), ("gf", "base")], "steps_to_95")
    by = versus.set_index("reference")
    assert by.loc["ctrl", "speedup"] == pytest.approx(np.median([200, 260, 240, 220])
                                                      / np.median([100, 120, 90, 110]))
    assert by.loc["ctrl", "speedup_bound"] == ""
    assert by.loc["base", "speedup_bound"] == ">="  # the base's median is censored
    [verdict] = acc.speedup_verdicts(versus, [claim])
    assert verdict.agrees is True and "ctrl" in verdict.ours
    slow = _runs({"gf": [(900, True), (1000, False), (950, True), (1000, False)],
                  "base": [(100, True), (120, True), (90, True), (110, True)]})
    [verdict] = acc.speedup_verdicts(
        acc.pair_comparisons(slow, [("gf", "base")], "steps_to_95"), [claim])
    assert verdict.agrees is False

"""The training loop: determinism, batched seeds, grokking, failure modes."""

import math

import pytest
import torch
from pandas.testing import assert_frame_equal
from registry import AUGMENTATIONS, CURRICULA

from groklab.checkpoint import checkpoint, load_model
from groklab.config import ConfigError, RunConfig
from groklab.summary import seed_summaries
from groklab.tasks import build_task
from groklab.train import TrainingDiverged, train

# A configuration that groks within a few hundred updates (about 5 s per seed on 2 cores).
FAST_GROK = RunConfig().replace(
    data={"p": 31, "train_fraction": 0.7},
    model={"width": 64},
    optim={"lr": 3e-3, "weight_decay": 1.0},
    train={"steps": 1500, "batch_size": 256, "eval_every": 10, "stop_after_grok": 50},
)
TINY = RunConfig().replace(data={"p": 13}, model={"width": 32, "heads": 2},
                           train={"steps": 30, "batch_size": 64, "eval_every": 10})


def test_same_seed_gives_identical_history():
    a = train(TINY, [0]).history
    b = train(TINY, [0]).history
    assert_frame_equal(a, b, check_exact=True)
    assert not train(TINY, [1]).history.equals(a)


def test_matmul_precision_leaves_a_cpu_run_unchanged():
    """TF32 is a GPU setting: on a CPU the bytes, and torch's global setting, stay put."""
    before = torch.get_float32_matmul_precision()
    a = train(TINY.replace(train={"device": "cpu"}), [0]).history
    b = train(TINY.replace(train={"device": "cpu", "matmul_precision": "high"}), [0]).history
    assert_frame_equal(a, b, check_exact=True)
    assert torch.get_float32_matmul_precision() == before


@pytest.mark.parametrize("aug", ["baseline", "combined30"])
def test_batched_seeds_match_training_each_alone(aug):
    cfg = TINY.replace(train={"aug": AUGMENTATIONS[aug]})
    together = train(cfg, [0, 1, 2]).history
    for seed in (0, 2):
        alone = train(cfg, [seed]).history
        mine = together[together.seed == seed].reset_index(drop=True)
        assert_frame_equal(mine, alone, check_exact=False, atol=1e-5, rtol=1e-4)


def test_history_layout_and_eval_steps():
    res = train(TINY, [0, 1])
    h = res.history
    assert list(h.columns) == ["seed", "step", "train_loss", "train_acc", "batch_loss",
                               "batch_acc", "val_loss", "val_acc", "clean_val_acc", "lr",
                               "softmax_collapse"]
    assert h[h.seed == 0].step.tolist() == [0, 10, 20, 30]
    assert (h.val_acc == h.clean_val_acc).all()  # no augmentation: nothing leaks
    assert len(res.final) == 2 and (res.final.n_train == int(169 * 0.5)).all()


def _final_model(res):
    return load_model(checkpoint(res.model, res.config, res.seeds, 0, res.steps_done)).eval()


def _accuracy(model, tokens, labels) -> float:
    """Plain-Python accuracy of a one-member model, one example at a time."""
    with torch.no_grad():
        hits = [int(model(t[None]).argmax(-1)) == int(y) for t, y in zip(tokens, labels,
                                                                          strict=True)]
    return sum(hits) / len(hits)


def test_augmented_run_reports_leakage_and_clean_accuracy():
    """val_reachable and clean_val_acc against a brute-force count on the saved model."""
    res = train(TINY.replace(train={"aug": AUGMENTATIONS["combined30"]}), [0])
    (s,) = seed_summaries(res)
    task = build_task(res.config.data, [0])
    sp = task.split(0.5, 0)
    p = res.config.data.p
    reach = set()
    for a, b in task.operands[sp.train].tolist():  # reversal and negation, each or both
        for x, y in {(a, b), (b, a)}:
            reach |= {(x, y), ((-x) % p, (-y) % p)}
    val = task.operands[sp.val].tolist()
    clean = [i for i, (a, b) in zip(sp.val.tolist(), val, strict=True) if (a, b) not in reach]
    assert s["val_reachable"] == pytest.approx(1 - len(clean) / len(val))
    assert 0 < len(clean) < len(val)
    model = _final_model(res)
    expected = _accuracy(model, task.tokens[clean], task.labels[clean])
    assert s["clean_val_acc"] == pytest.approx(expected)
    assert s["val_in_train"] == 0.0


def test_training_curve_is_accuracy_on_the_unaugmented_training_split():
    """train_acc is the model in eval mode on training examples, not the augmented batches."""
    cfg = TINY.replace(train={"aug": AUGMENTATIONS["combined30"]})
    res = train(cfg, [0])
    task = build_task(cfg.data, [0])
    sp = task.split(0.5, 0)
    expected = _accuracy(_final_model(res), task.tokens[sp.train], task.labels[sp.train])
    last = res.history.iloc[-1]
    assert len(sp.train) < cfg.train.curve_examples  # so the curve sees the whole split
    assert last.train_acc == pytest.approx(expected)
    assert res.final.final_train_acc.iloc[0] == pytest.approx(expected)
    assert res.history.batch_acc.isna().tolist() == [True, False, False, False]


def test_training_curve_sample_is_fixed_and_of_the_requested_size():
    cfg = TINY.replace(train={"curve_examples": 20})
    h = train(cfg, [0]).history
    assert ((h.train_acc * 20).round(6) % 1 == 0).all()  # k/20 at every evaluation
    assert not ((h.train_acc * 84).round(6) % 1 == 0).all()


def test_divergence_is_reported_with_a_fix():
    cfg = TINY.replace(optim={"kind": "sgd", "lr": 1e12, "weight_decay": 0.0, "warmup": 0})
    with pytest.raises(TrainingDiverged, match="NaN/inf at update .*lower the learning rate"):
        train(cfg, [0])


def test_censored_run_keeps_the_budget_and_says_why_fits_failed():
    res = train(TINY, [0])
    (s,) = seed_summaries(res)
    assert res.history.val_acc.max() < 0.99  # 30 updates at p=13 are far from grokking
    assert not s["grokked"] and s["steps_to_99"] == 30  # censored at the budget
    assert math.isnan(s["relative_gap"])
    assert not (s["val_fit_ok"] and s["train_fit_ok"])
    assert s["val_fit_reason"] or s["train_fit_reason"]


@pytest.mark.slow
def test_stop_after_grok_stops_at_the_first_evaluation_that_many_updates_later():
    full = train(FAST_GROK.replace(train={"stop_after_grok": None, "steps": 1500}), [0, 1])
    first = [int(h.step[h.val_acc >= 0.99].min()) for _, h in full.history.groupby("seed")]
    assert full.steps_done == 1500
    for s in seed_summaries(full):  # it groks: training fits first, validation follows
        assert s["grokked"] and s["steps_to_99_train"] < s["steps_to_99"], s
    stopped = train(FAST_GROK.replace(train={"stop_after_grok": 40, "steps": 1500}), [0, 1])
    # Both seeds reached 99%; training ends at the first evaluation 40 updates after the
    # later of the two (evaluations every 10), with the same history up to then.
    expected = max(first) + 40
    assert stopped.steps_done == expected < 1500
    assert int(stopped.history.step.max()) == expected
    prefix = full.history[full.history.step <= expected].reset_index(drop=True)
    assert_frame_equal(stopped.history, prefix, check_exact=True)


def test_bad_inputs_fail_before_training():
    with pytest.raises(ConfigError, match="steps=0 must be a positive integer"):
        TINY.replace(train={"steps": 0})
    with pytest.raises(ConfigError, match="seeds=\\[1, 1\\] has repeats"):
        train(TINY, [1, 1])
    with pytest.raises(ConfigError, match="curriculum needs sampled batches"):
        train(TINY.replace(train={"batch_size": None, "curriculum": CURRICULA["linear"]}), [0])
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            train(TINY.replace(train={"device": "cuda"}), [0])

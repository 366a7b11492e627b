"""The training loop: determinism, batched seeds, grokking, failure modes."""

import math

import pytest
import torch
from pandas.testing import assert_frame_equal

from groklab.config import ConfigError, RunConfig
from groklab.summary import seed_summaries
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


@pytest.mark.parametrize("aug", ["baseline", "combined30"])
def test_batched_seeds_match_training_each_alone(aug):
    cfg = TINY.replace(train={"aug": aug})
    together = train(cfg, [0, 1, 2]).history
    for seed in (0, 2):
        alone = train(cfg, [seed]).history
        mine = together[together.seed == seed].reset_index(drop=True)
        assert_frame_equal(mine, alone, check_exact=False, atol=1e-5, rtol=1e-4)


def test_history_layout_and_eval_steps():
    res = train(TINY, [0, 1])
    h = res.history
    assert list(h.columns) == ["seed", "step", "train_loss", "train_acc", "val_loss", "val_acc",
                               "clean_val_acc", "lr"]
    assert h[h.seed == 0].step.tolist() == [0, 10, 20, 30]
    assert (h.val_acc == h.clean_val_acc).all()  # no augmentation: nothing leaks
    assert len(res.final) == 2 and (res.final.n_train == int(169 * 0.5)).all()


@pytest.mark.slow
def test_small_configuration_groks():
    res = train(FAST_GROK, [0, 1])
    for s in seed_summaries(res):
        assert s["grokked"], s
        assert s["final_val_acc"] >= 0.99 or s["steps_to_99"] < 1500
        assert s["steps_to_99_train"] <= s["steps_to_99"]


def test_augmented_run_reports_leakage_and_clean_accuracy():
    res = train(TINY.replace(train={"aug": "combined30"}), [0])
    (s,) = seed_summaries(res)
    assert 0.5 < s["val_reachable"] < 1.0
    assert 0.0 <= s["clean_val_acc"] <= 1.0


def test_divergence_is_reported_with_a_fix():
    cfg = TINY.replace(optim={"kind": "sgd", "lr": 1e12, "weight_decay": 0.0, "warmup": 0})
    with pytest.raises(TrainingDiverged, match="NaN/inf at update .*lower the learning rate"):
        train(cfg, [0])


def test_stop_after_grok_stops_early_and_censoring_is_kept():
    res = train(TINY, [0])
    (s,) = seed_summaries(res)
    assert not s["grokked"] and s["steps_to_99"] == 30  # censored at the budget
    assert math.isnan(s["relative_gap"]) or isinstance(s["relative_gap"], float)


def test_bad_inputs_fail_before_training():
    with pytest.raises(ConfigError, match="steps=0 must be a positive integer"):
        TINY.replace(train={"steps": 0})
    with pytest.raises(ConfigError, match="seeds=\\[1, 1\\] has repeats"):
        train(TINY, [1, 1])
    with pytest.raises(ConfigError, match="curriculum needs sampled batches"):
        train(TINY.replace(train={"batch_size": None, "curriculum": {"name": "linear"}}), [0])
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            train(TINY.replace(train={"device": "cuda"}), [0])

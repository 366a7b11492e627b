"""The training loop: determinism, batched seeds, grokking, failure modes."""

import math

import pytest
import torch
from pandas.testing import assert_frame_equal
from registry import AUGMENTATIONS, CURRICULA
from torch import nn

from groklab.checkpoint import checkpoint, load_model
from groklab.config import ConfigError, RunConfig
from groklab.models import build_model
from groklab.summary import seed_summaries
from groklab.tasks import build_task
from groklab.train import TrainingDiverged, float32_matmuls, train

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


class Recording(nn.Module):
    """The real model of ``seeds`` (build_model), with a hook on every forward call."""

    def __init__(self, cfg: RunConfig, seeds: list[int], hook):
        super().__init__()
        self.inner = build_model(cfg.model, build_task(cfg.data, seeds), seeds)
        self.hook = hook
        self.train_calls = 0  # forwards in training mode so far (one per update)

    def forward(self, tokens):
        if self.training:
            self.train_calls += 1
        return self.hook(self, tokens, self.inner(tokens))


def recording(seeds: list[int], hook):
    """A ``model_factory`` for ``train`` building :class:`Recording` around the real model."""
    return lambda cfg: Recording(cfg, seeds, hook)


def _other_precision() -> str:
    """A train.matmul_precision value other than torch's current global one."""
    return "high" if torch.get_float32_matmul_precision() != "high" else "highest"


def test_float32_matmuls_sets_the_precision_on_cuda_and_restores_it():
    before = torch.get_float32_matmul_precision()
    wanted = _other_precision()
    cuda = torch.device("cuda")  # a device object: no GPU needed
    try:
        with float32_matmuls(cuda, wanted):
            assert torch.get_float32_matmul_precision() == wanted
        assert torch.get_float32_matmul_precision() == before
        with pytest.raises(RuntimeError, match="inside the block"), float32_matmuls(cuda, wanted):
            assert torch.get_float32_matmul_precision() == wanted
            raise RuntimeError("inside the block")
        assert torch.get_float32_matmul_precision() == before
        with float32_matmuls(torch.device("cpu"), wanted):  # a CPU ignores the setting
            assert torch.get_float32_matmul_precision() == before
        assert torch.get_float32_matmul_precision() == before
    finally:
        torch.set_float32_matmul_precision(before)


def test_train_passes_the_configured_precision_to_float32_matmuls(monkeypatch):
    """train() runs _train inside float32_matmuls(device, cfg.train.matmul_precision): with
    the device resolved to CUDA, _train sees the configured precision, restored after."""
    import groklab.train as train_module

    before = torch.get_float32_matmul_precision()
    wanted = _other_precision()
    seen = []
    monkeypatch.setattr(train_module, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(train_module, "_train", lambda *args: seen.append(
        torch.get_float32_matmul_precision()))
    try:
        train(TINY.replace(train={"matmul_precision": wanted}), [0])
        assert seen == [wanted]
        assert torch.get_float32_matmul_precision() == before
    finally:
        torch.set_float32_matmul_precision(before)


def test_matmul_precision_leaves_a_cpu_run_unchanged():
    """TF32 is a GPU setting: on a CPU every forward runs at torch's global precision, and
    the bytes do not change."""
    before = torch.get_float32_matmul_precision()
    wanted = _other_precision()  # asked for, and to be ignored on a CPU
    seen = []

    def note(model, tokens, logits):
        seen.append(torch.get_float32_matmul_precision())
        return logits

    cpu = {"device": "cpu", "steps": 10}  # few updates: the check is cheap
    a = train(TINY.replace(train=cpu), [0]).history
    b = train(TINY.replace(train={**cpu, "matmul_precision": wanted}), [0],
              model_factory=recording([0], note)).history
    assert len(seen) > 10 and set(seen) == {before}  # 10 updates and the evaluations
    assert_frame_equal(a, b, check_exact=True)  # the wrapper computes the same model
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


def _eval_inputs():
    """A list, and a hook appending to it the tokens of each evaluation-mode forward."""
    seen = []

    def note(model, tokens, logits):
        if not model.training:
            assert not torch.is_grad_enabled()
            seen.append(tokens.clone())
        return logits

    return seen, note


def test_training_curve_sample_is_fixed_and_of_the_requested_size():
    """Each evaluation feeds the model (in evaluation mode) the validation split, then the
    training curve sample; the sample must be the same rows every time, distinct rows of the
    member's own training split, ``curve_examples`` of them, and differ between seeds."""
    seeds, m = [0, 1], 20
    cfg = TINY.replace(train={"curve_examples": m})
    evals, note = _eval_inputs()
    res = train(cfg, seeds, model_factory=recording(seeds, note))
    steps = sorted(set(res.history.step))
    assert steps == [0, 10, 20, 30]
    # Per evaluation: the validation split (85 rows < one chunk), then the curve sample;
    # after training the final metrics read the whole training and validation splits.
    assert len(evals) == 2 * len(steps) + 2
    curves = evals[1:2 * len(steps):2]
    task = build_task(cfg.data, seeds)
    rows = [tuple(t.tolist()) for t in task.tokens]
    for i, seed in enumerate(seeds):
        sp = task.split(cfg.data.train_fraction, seed)
        assert [tuple(t) for t in evals[0][i].tolist()] == [rows[j] for j in sp.val.tolist()]
        train_rows = {rows[j] for j in sp.train.tolist()}
        first = [tuple(t) for t in curves[0][i].tolist()]
        assert len(first) == m and len(set(first)) == m  # m distinct examples
        assert set(first) <= train_rows
        for later in curves[1:]:
            assert torch.equal(later[i], curves[0][i])  # the same rows, in the same order
    assert {tuple(t) for t in curves[0][0].tolist()} != {tuple(t) for t in
                                                         curves[0][1].tolist()}
    # Each seed draws its own sample: seed 1 alone gets the rows it got beside seed 0.
    alone, note = _eval_inputs()
    train(cfg.replace(train={"steps": 10}), [1], model_factory=recording([1], note))
    assert torch.equal(alone[1][0], curves[0][1])
    # When the split is smaller than curve_examples, the sample is the whole split.
    whole, note = _eval_inputs()
    train(TINY.replace(train={"curve_examples": 1000, "steps": 10}), [0],
          model_factory=recording([0], note))
    sp = task.split(cfg.data.train_fraction, 0)
    assert sorted(tuple(t) for t in whole[1][0].tolist()) == sorted(rows[j] for j in
                                                                   sp.train.tolist())
    assert whole[1].shape[1] == len(sp.train) == int(169 * 0.5)


@pytest.mark.parametrize("where", ["every_forward", "training_only"])
def test_divergence_is_reported_with_a_fix(where):
    """Member 1 (seed 7) turns NaN after update 15, and only it.

    Derivation: update k is the k-th training-mode forward, so updates 16, 17, ... give NaN
    logits for member 1. The loop checks the losses at its evaluations, every 10 updates:
    at update 10 everything is still finite; at update 20 member 1's batch loss (the mean
    over updates 11-20) is NaN, and, in "every_forward", its curve and validation losses
    too. So: update 20, seed list [7]. "training_only" leaves the evaluations finite, so
    the batch loss alone must catch it."""
    seeds, nan_after = [3, 7], 15

    def poison(model, tokens, logits):
        if model.train_calls > nan_after and (model.training or where == "every_forward"):
            logits = logits.clone()
            logits[1] = float("nan")
        return logits

    cfg = TINY.replace(train={"steps": 50})
    with pytest.raises(TrainingDiverged) as err:
        train(cfg, seeds, model_factory=recording(seeds, poison))
    message = str(err.value)
    assert "loss became NaN/inf at update 20 for seed(s) [7] " in message
    assert "lower the learning rate" in message


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
    # The reference run goes on long enough past grokking to hold the stopped run's whole
    # history (a later stop changes nothing before it: the prefix is what is compared).
    full = train(FAST_GROK.replace(train={"stop_after_grok": 200, "steps": 1500}), [0, 1])
    first = [int(h.step[h.val_acc >= 0.99].min()) for _, h in full.history.groupby("seed")]
    assert full.steps_done == max(first) + 200
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

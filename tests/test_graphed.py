"""The graphed training step, run eagerly on the CPU: the logic a GPU captures.

Batches, augmentation, learning rate and curriculum pools are checked against plain-Python
oracles; the whole loop against the plain loop's semantics. tests/test_cuda.py checks the
captured graphs themselves on a GPU.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch
from pandas.testing import assert_frame_equal
from registry import AUGMENTATIONS, CURRICULA
from scipy import stats
from test_train import FAST_GROK, TINY
from torch.utils._python_dispatch import TorchDispatchMode

from groklab.augment import get_augmentation
from groklab.config import ConfigError, CurriculumConfig, RunConfig
from groklab.curriculum import PoolSampler
from groklab.graphed import GraphedLoop
from groklab.models import build_model
from groklab.summary import seed_summaries
from groklab.tasks import build_task
from groklab.train import HISTORY_COLUMNS, TrainData, TrainingDiverged, resolve_engine, train

CPU = TINY.replace(train={"device": "cpu"})



def schedule(name: str, **changes) -> CurriculumConfig:
    """The named schedule of params.yaml with some of its settings changed."""
    return dataclasses.replace(CURRICULA[name], **changes)


def graphed_loop(cfg: RunConfig, seeds: list[int], **kwargs) -> GraphedLoop:
    task = build_task(cfg.data, seeds)
    aug = get_augmentation(cfg.train.aug, task)
    data = TrainData(task, cfg, seeds, torch.device("cpu"), aug)
    return GraphedLoop(cfg, seeds, task, aug, data, build_model(cfg.model, task, seeds),
                       capture=False, **kwargs)


def plain_label(task: str, p: int, a: int, b: int) -> int:
    if task == "x_plus_y":
        return (a + b) % p
    if task == "x_minus_y":
        return (a - b) % p
    return a * pow(b, p - 2, p) % p  # x_div_y


def draws(loop: GraphedLoop, counters: range) -> tuple[list, list, list]:
    """Sampled indices, augmented operand rows and labels of member 0 at each counter."""
    idx, ops, labels = [], [], []
    for t in counters:
        loop.counter.fill_(t)
        i, o, _, y = loop.batch()
        idx += i[0].tolist()
        ops += (o[0] if o is not None else loop.data.operands[i[0]]).tolist()
        labels += y[0].tolist()
    return idx, ops, labels


def test_batches_cover_the_step_pool_uniformly_and_nothing_else():
    cfg = CPU.replace(data={"p": 31}, train={"batch_size": 256, "steps": 100,
                                              "curriculum": schedule("step", start=0.2)})
    loop = graphed_loop(cfg, [0, 1])
    idx, ops, labels = draws(loop, range(10))  # the pool stays put until observe
    task = build_task(cfg.data)
    train_rows = task.operands[task.split(0.5, 0).train].tolist()
    # Oracle: the easiest ceil(0.2 n) training examples by max operand, with all ties.
    hardness = sorted(max(a, b) for a, b in train_rows)
    cut = hardness[math.ceil(0.2 * len(train_rows)) - 1]
    pool = {a * 31 + b for a, b in train_rows if max(a, b) <= cut}
    assert set(idx) == pool
    counts = np.bincount(idx, minlength=31 * 31)[sorted(pool)]
    assert stats.chisquare(counts).pvalue > 1e-4  # uniform over the pool
    assert all(y == (a + b) % 31 for (a, b), y in zip(ops, labels, strict=True))


@pytest.mark.parametrize("name", ["linear", "anti"])
def test_batches_come_from_the_time_paced_pool(name):
    steps, p = 100, 31
    cfg = CPU.replace(data={"p": p}, train={"batch_size": 256, "steps": steps,
                                             "curriculum": schedule(name, start=0.2)})
    loop = graphed_loop(cfg, [3])
    task = build_task(cfg.data)
    train_rows = task.operands[task.split(0.5, 3).train].tolist()
    sign = -1 if name == "anti" else 1
    hardness = sorted(sign * max(a, b) for a, b in train_rows)
    for t in (0, 25, 49, 99):
        delta = 0.2 + 0.8 * min(1.0, t / (0.5 * steps))
        cut = hardness[min(len(hardness), math.ceil(delta * len(hardness) - 1e-9)) - 1]
        idx, _, _ = draws(loop, range(t, t + 1))
        assert all(sign * max(divmod(i, p)) <= cut for i in idx), t


@pytest.mark.parametrize("task_name, aug, rates", [
    ("x_plus_y", "reversal", {"reversed": 0.3}),
    ("x_plus_y", "negation", {"negated": 0.3}),
    ("x_plus_y", "combined30", {"reversed": 0.21, "negated": 0.21, "both": 0.09}),
    ("x_div_y", "combined15", {"reversed": 0.1275, "negated": 0.1275, "both": 0.0225}),
])
def test_augmentation_rates_valid_examples_and_recomputed_labels(task_name, aug, rates):
    p = 31
    cfg = CPU.replace(data={"task": task_name, "p": p},
                      train={"aug": AUGMENTATIONS[aug], "batch_size": 512, "steps": 40})
    loop = graphed_loop(cfg, [5])
    idx, ops, labels = draws(loop, range(40))
    task = build_task(cfg.data)
    seen = {k: 0 for k in ("reversed", "negated", "both")}
    distinct = 0
    for i, (a, b), y in zip(idx, ops, labels, strict=True):
        assert task_name != "x_div_y" or b != 0  # never a zero divisor
        assert y == plain_label(task_name, p, a, b)
        x0, x1 = task.operands[i].tolist()
        neg = ((-x0) % p, x1) if task_name == "x_div_y" else ((-x0) % p, (-x1) % p)
        images = {"none": (x0, x1), "reversed": (x1, x0), "negated": neg,
                  "both": ((-x1) % p, x0) if task_name == "x_div_y" else (neg[1], neg[0])}
        if len(set(images.values())) < 4 or 0 in (x0, x1):  # ambiguous or not always valid
            continue
        distinct += 1
        (outcome,) = [k for k, v in images.items() if v == (a, b)]
        if outcome != "none":
            seen[outcome] += 1
    assert distinct > 5000
    for outcome, rate in rates.items():
        sd = math.sqrt(rate * (1 - rate) / distinct)
        assert abs(seen[outcome] / distinct - rate) < 4.5 * sd, (outcome, seen, distinct)
    for outcome in set(seen) - set(rates):
        assert seen[outcome] == 0


def test_zero_divisor_keeps_the_original_example():
    p = 31
    cfg = CPU.replace(data={"task": "x_div_y", "p": p},
                      train={"aug": AUGMENTATIONS["reversal"], "batch_size": 512, "steps": 40})
    loop = graphed_loop(cfg, [1])
    idx, ops, _ = draws(loop, range(40))
    task = build_task(cfg.data)
    zero_first = [(task.operands[i].tolist(), o) for i, o in zip(idx, ops, strict=True)
                  if task.operands[i, 0] == 0]
    assert len(zero_first) > 100 and all(orig == new for orig, new in zero_first)


def test_learning_rate_is_the_warmup_formula_inside_the_step():
    cfg = CPU.replace(optim={"lr": 2e-3, "warmup": 7}, train={"steps": 12})
    loop = graphed_loop(cfg, [0])
    for t in range(12):
        loop.update_step()
        assert loop.lr.item() == pytest.approx(2e-3 * min((t + 1) / 7, 1.0), rel=1e-6)
    h = train(cfg.replace(train={"eval_every": 3}), [0], engine="graph_eager").history
    expected = [2e-3 * min((s + 1) / 7, 1.0) for s in h.step]
    assert h.lr.tolist() == pytest.approx(expected, rel=1e-6)
    plain = train(cfg.replace(train={"eval_every": 3}), [0], engine="loop").history
    assert (h.lr == plain.lr).all() and (h.step == plain.step).all()


def test_history_has_the_plain_loops_layout_and_meaning():
    res = train(CPU, [0, 1], engine="graph_eager")
    h = res.history
    assert tuple(h.columns) == HISTORY_COLUMNS
    assert h[h.seed == 0].step.tolist() == [0, 10, 20, 30]
    assert h.batch_acc.isna().tolist() == [True, False, False, False] * 2
    assert (h.val_acc == h.clean_val_acc).all()  # no augmentation: nothing leaks
    assert list(res.final.columns) == list(train(CPU, [0], engine="loop").final.columns)
    assert res.steps_done == 30
    # train_acc is the model in eval mode on the fixed sample, as in the plain loop
    cfg = CPU.replace(train={"curve_examples": 20})
    h = train(cfg, [0], engine="graph_eager").history
    assert ((h.train_acc * 20).round(6) % 1 == 0).all()


def test_same_seed_twice_is_identical_and_other_seeds_differ():
    cfg = CPU.replace(train={"aug": AUGMENTATIONS["combined30"]})
    a = train(cfg, [0], engine="graph_eager").history
    b = train(cfg, [0], engine="graph_eager").history
    assert_frame_equal(a, b, check_exact=True)
    c = train(cfg, [1], engine="graph_eager").history
    assert not c.drop(columns="seed").equals(a.drop(columns="seed"))


@pytest.mark.parametrize("aug", ["baseline", "combined30"])
def test_batched_member_trains_as_it_would_alone(aug):
    cfg = CPU.replace(train={"aug": AUGMENTATIONS[aug], "curriculum": CURRICULA["linear"]})
    together = train(cfg, [0, 1, 2], engine="graph_eager").history
    for seed in (0, 2):
        alone = train(cfg, [seed], engine="graph_eager").history
        mine = together[together.seed == seed].reset_index(drop=True)
        assert_frame_equal(mine, alone, check_exact=False, atol=1e-5, rtol=1e-4)


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("curriculum, aug", [("step", "combined30"), ("linear", "baseline")])
def test_steps_never_wait_for_the_host(curriculum, aug):
    """No op that reads a value back or has a data-dependent shape: what a graph can't hold."""
    cfg = CPU.replace(train={"aug": AUGMENTATIONS[aug], "curriculum": CURRICULA[curriculum],
                             "stop_after_grok": 5})
    loop = graphed_loop(cfg, [0, 1])
    with _Ops() as ops:
        loop.update_step()
        loop.eval_step()
    forbidden = {"_local_scalar_dense", "item", "nonzero", "unique", "_unique",
                 "_unique2", "unique_dim", "masked_select", "is_nonzero", "equal"}
    assert "_fused_adamw_" in ops.names and not ops.names & forbidden


def test_step_schedule_advances_as_the_sampler_observes():
    cfg = CPU.replace(optim={"lr": 3e-3}, train={
        "steps": 60, "eval_every": 5,
        "curriculum": schedule("step", step_threshold=0.3, step_size=0.1)})
    seeds = [0, 1, 2]
    loop = graphed_loop(cfg, seeds)
    rows, _ = loop.run()
    task = build_task(cfg.data, seeds)
    data = TrainData(task, cfg, seeds, torch.device("cpu"),
                 get_augmentation(AUGMENTATIONS["baseline"], task))
    oracle = PoolSampler(cfg.train.curriculum, task, data.train_idx, seeds, 60, [])
    for row in rows[1:]:  # the sampler observes batch accuracy after batches only
        oracle.observe(row[:, 4].tolist())
    assert loop.advances.tolist() == oracle.advances
    assert 0 < sum(oracle.advances) < 3 * 8  # some advances, not all the way
    assert loop.pool.flatten().tolist() == [oracle.pool_size(s, 0) for s in range(3)]


def test_engine_names_are_checked_before_training(monkeypatch):
    with pytest.raises(ConfigError, match="engine='fast' is not known; choose one of: auto, "):
        train(CPU, [0], engine="fast")
    monkeypatch.setenv("GROKLAB_ENGINE", "eager")
    with pytest.raises(ConfigError, match="GROKLAB_ENGINE='eager' is not known"):
        train(CPU, [0])
    monkeypatch.setenv("GROKLAB_ENGINE", "graph_eager")
    assert resolve_engine("auto", torch.device("cpu")) == "graph_eager"
    assert resolve_engine("loop", torch.device("cpu")) == "loop"


def test_divergence_is_reported_with_a_fix():
    cfg = CPU.replace(optim={"kind": "sgd", "lr": 1e12, "weight_decay": 0.0, "warmup": 0})
    with pytest.raises(TrainingDiverged, match="NaN/inf at update .*lower the learning rate"):
        train(cfg, [0], engine="graph_eager")


@pytest.mark.slow
def test_early_stop_freezes_the_model_when_the_host_reads_late():
    """Reading the history only every 25 evaluations, as captured runs do, still stops at
    the first evaluation ``stop_after_grok`` updates after the last seed reached 99%: later
    replays leave the weights and the history alone."""
    cfg = FAST_GROK.replace(train={"device": "cpu", "stop_after_grok": 30, "steps": 1500})
    # the reference: the same run stopped later (200 updates after), whose history up to the
    # early stop is the one to match
    full = train(cfg.replace(train={"stop_after_grok": 200}), [0], engine="graph_eager")
    first = int(full.history.step[full.history.val_acc >= 0.99].min())
    late = graphed_loop(cfg, [0], sync_every=25)
    rows, steps_done = late.run()
    assert steps_done == first + 30 == int(rows[-1][0, 0])
    assert len(rows) == steps_done // 10 + 1
    table = torch.stack(rows, 1)[0]
    expected = full.history[full.history.step <= steps_done].drop(columns="seed")
    torch.testing.assert_close(table, torch.tensor(expected.to_numpy(), dtype=torch.float32),
                               rtol=0, atol=0, equal_nan=True)
    stopped = train(cfg, [0], engine="graph_eager")
    final = stopped.model.state_dict()
    assert all(torch.equal(final[k], v) for k, v in late.model.state_dict().items())


@pytest.mark.slow
def test_graph_logic_groks_like_the_plain_loop():
    """Steps to 99% of the graph logic and the plain loop agree within seed noise (their
    random draws differ, so the comparison is statistical)."""
    cfg = FAST_GROK.replace(train={"device": "cpu"})
    seeds = [0, 1, 2]
    steps = {engine: [s["steps_to_99"] for s in seed_summaries(train(cfg, seeds,
                                                                     engine=engine))]
             for engine in ("loop", "graph_eager")}
    assert all(s < 1500 for s in steps["graph_eager"])  # every seed grokked
    assert stats.ttest_ind(steps["loop"], steps["graph_eager"], equal_var=False).pvalue > 0.01

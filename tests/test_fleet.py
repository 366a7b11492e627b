"""Several cells trained as one batched model (groklab.fleet): each member must train byte
for byte as its cell does alone on the plain loop (the oracle: groklab.train.train)."""

import dataclasses
import re

import pytest
import torch
from pandas.testing import assert_frame_equal
from registry import AUGMENTATIONS, CURRICULA, PARAMS
from test_train import TINY

from groklab import params as P
from groklab.config import ConfigError, RunConfig
from groklab.errors import Interrupted, TrainingDiverged
from groklab.fleet import (
    fleet_key,
    group_fleets,
    passes,
    snapshot_path,
    source_digest,
    train_fleet,
)
from groklab.train import train

CPU = TINY.replace(train={"device": "cpu", "steps": 30})
SEEDS = [0, 1]


def optimizer(name: str, **changes) -> RunConfig:
    return dataclasses.replace(CPU, optim=dataclasses.replace(P.optimizer(PARAMS, name),
                                                              **changes))


def assert_trains_as_alone(configs: list[RunConfig], seeds: list[int] = SEEDS,
                           check: int | None = None) -> list:
    """Train ``configs`` as a fleet; compare each (or the first ``check``) with its cell
    trained alone."""
    fleet = train_fleet(configs, seeds)
    assert fleet.errors == [None] * len(configs), fleet.errors
    assert_same_as_alone(configs, fleet.results, seeds, check)
    return fleet.results


def assert_same_as_alone(configs: list[RunConfig], results: list, seeds: list[int] = SEEDS,
                         check: int | None = None) -> None:
    """Each of ``results`` (or the first ``check``) byte for byte its cell trained alone."""
    for config, got in list(zip(configs, results, strict=True))[:check]:
        assert_same_result(got, train(config, seeds, engine="loop"))


def assert_same_result(got, expected) -> None:
    """Two training results byte for byte: history, final metrics, measures, weights."""
    assert_frame_equal(got.history, expected.history, check_exact=True)
    assert_frame_equal(got.final, expected.final, check_exact=True)
    if expected.measures is None:
        assert got.measures is None
    else:
        assert_frame_equal(got.measures, expected.measures, check_exact=True)
    assert got.steps_done == expected.steps_done
    mine, theirs = got.model.state_dict(), expected.model.state_dict()
    assert list(mine) == list(theirs)
    for name in mine:
        assert torch.equal(mine[name], theirs[name]), name


def test_cells_of_every_kind_train_in_a_fleet_as_they_do_alone():
    """Augmentation, curricula (time- and accuracy-paced), three optimiser kinds with their
    own learning rates and decay, Grokfast's filter, ⊥Grad, another task of the same shapes
    (other prefixes: separate passes) and another training fraction, in one fleet."""
    configs = [CPU,
               CPU.replace(train={"aug": AUGMENTATIONS["combined30"]}),
               CPU.replace(train={"curriculum": CURRICULA["linear"]}),
               CPU.replace(train={"curriculum": CURRICULA["step"]}),
               optimizer("sgd_nesterov"),
               optimizer("adam", lr=3e-3),
               optimizer("grokfast_ema"),
               optimizer("orthograd"),
               CPU.replace(data={"task": "x_div_y"}),
               CPU.replace(data={"train_fraction": 0.3})]
    assert len({fleet_key(c, SEEDS) for c in configs}) == 1
    assert_trains_as_alone(configs)


@pytest.mark.parametrize("case", ["full_batch", "mlp", "lstm", "transformer1", "bit_mlp",
                                  "stablemax"])
def test_every_architecture_and_loss_trains_in_a_fleet_as_alone(case):
    full = CPU.replace(train={"batch_size": None})
    if case == "full_batch":  # two optimisers with their own warm-ups, the whole split
        nanda = dataclasses.replace(full, optim=P.optimizer(PARAMS, "adamw_nanda"))
        configs = [full, nanda]
    elif case == "bit_mlp":
        parity = CPU.replace(data={"task": "parity", "parity_examples": 200,
                                   "concealed_bits": 2},
                             model={"arch": "bit_mlp", "bit_mlp_hidden": 64},
                             train={"steps": 50, "batch_size": 32})
        parity = dataclasses.replace(parity, optim=P.optimizer(PARAMS, "sgd_parity"))
        configs = [parity, parity.replace(optim={"lr": 0.02})]
    elif case == "stablemax":
        stable = optimizer("stablemax").replace(train={"loss": "stablemax"})
        configs = [stable, stable.replace(optim={"lr": 1e-2})]
    else:  # transformer1 on x_plus_y records the Fourier measures at every evaluation
        arch = CPU.replace(model={"arch": case}, train={"measures_every": 1})
        configs = [arch, arch.replace(optim={"lr": 3e-3})]
    results = assert_trains_as_alone(configs)
    if case == "transformer1":
        assert results[0].measures is not None and len(results[0].measures) == 2 * 4


def test_a_cell_that_stops_leaves_the_fleet_and_one_that_diverges_fails_alone():
    # Augmented with 90% of p = 11 for training, every validation equation is reachable, so
    # validation reaches 99% as soon as training does (near update 120 without decay).
    leaky = CPU.replace(data={"p": 11, "train_fraction": 0.9}, model={"width": 64},
                        optim={"lr": 3e-3, "weight_decay": 0.0, "warmup": 10},
                        train={"steps": 300, "stop_after_grok": 20,
                               "aug": AUGMENTATIONS["combined30"]})
    runs_on = leaky.replace(train={"stop_after_grok": None}, optim={"lr": 1e-3})
    results = assert_trains_as_alone([leaky, runs_on], check=1)
    assert results[0].steps_done < 300 and results[1].steps_done == 300
    assert len(results[1].history) == 2 * 31  # every evaluation of the cell that went on

    blows_up = optimizer("sgd_nesterov", lr=1e30)
    fleet = train_fleet([CPU, blows_up], SEEDS)
    assert isinstance(fleet.errors[1], TrainingDiverged) and fleet.results[1] is None
    assert "loss became NaN/inf at update 10" in str(fleet.errors[1])
    assert_frame_equal(fleet.results[0].history, train(CPU, SEEDS, engine="loop").history,
                       check_exact=True)


def test_fleet_keys_say_what_must_be_shared():
    key = fleet_key(CPU, SEEDS)
    assert key == fleet_key(CPU.replace(optim={"lr": 0.5, "weight_decay": 0.0}), SEEDS)
    assert key == fleet_key(CPU.replace(data={"task": "x_minus_y", "train_fraction": 0.9}),
                            SEEDS)
    for other in (CPU.replace(train={"batch_size": 32}), CPU.replace(train={"steps": 61}),
                  CPU.replace(train={"eval_every": 5}), CPU.replace(model={"width": 64}),
                  CPU.replace(data={"p": 11}), CPU.replace(train={"loss": "stablemax"}),
                  CPU.replace(data={"task": "permutation"})):
        assert fleet_key(other, SEEDS) != key
    # full batches: the batch is the training split, so its size must match
    full = CPU.replace(train={"batch_size": None})
    assert fleet_key(full, SEEDS) != fleet_key(full.replace(data={"train_fraction": 0.3}),
                                               SEEDS)
    # dropout draws from torch's global generator; one seed takes the fused LayerNorm
    assert fleet_key(CPU.replace(model={"dropout": 0.1}), SEEDS) is None
    assert fleet_key(CPU, [0]) is None
    with pytest.raises(ConfigError, match="cannot train as one fleet"):
        train_fleet([CPU, CPU.replace(train={"batch_size": 32})], SEEDS)


def test_grouping_keeps_plan_order_and_caps_members():
    keys = ["a", None, "b", "a", "a", None, "b"]
    assert group_fleets(keys) == [[0, 3, 4], [1], [2, 6], [5]]
    # at most 7 members, 3 seeds a cell: two cells a fleet
    assert group_fleets(keys, 7, [3] * 7) == [[0, 3], [1], [2, 6], [4], [5]]
    assert group_fleets(["a"], 1, [3]) == [[0]]  # a cell larger than the cap is its own fleet


def test_passes_group_cells_by_the_prefixes_their_batches_hold():
    # vocabulary 4, prefix length 2: keys 4a + b; cells 0 and 2 hold {(1,2), (3,0)}
    a = torch.tensor([[[1, 2, 0], [3, 0, 1]], [[3, 0, 2], [1, 2, 2]]])
    b = torch.tensor([[[1, 2, 0], [1, 2, 1]], [[1, 2, 2], [1, 2, 3]]])
    c = torch.tensor([[[3, 0, 3], [3, 0, 3]], [[1, 2, 1], [1, 2, 1]]])
    assert passes([a, b, c], 2, 4) == [[0, 2], [1]]
    assert passes([a, b, c], 0, 4) == [[0, 1, 2]]  # no shared prefix: one pass
    assert passes([a, b, c], 1, 4) == [[0, 2], [1]]


def test_one_pass_per_update_agrees_with_the_cells_alone_within_rounding():
    """``exact=False`` (a GPU's default): one pass for cells whose batches hold different
    prefixes; each member's sums then round over extra rows, nothing else changes."""
    configs = [CPU, CPU.replace(data={"task": "x_div_y"}),
               CPU.replace(train={"curriculum": CURRICULA["linear"]})]
    fleet = train_fleet(configs, SEEDS, exact=False)
    assert fleet.passes == fleet.updates == 30
    for config, got in zip(configs, fleet.results, strict=True):
        alone = train(config, SEEDS, engine="loop")
        # losses within float tolerance; an accuracy may move by an example whose logits
        # tie within rounding (1/84 of the validation split)
        accuracy = [c for c in got.history.columns if c.endswith("_acc")]
        assert_frame_equal(got.history.drop(columns=accuracy),
                           alone.history.drop(columns=accuracy), check_exact=False,
                           atol=1e-4, rtol=1e-3)
        assert_frame_equal(got.history[accuracy], alone.history[accuracy],
                           check_exact=False, atol=0.03, rtol=0)


def stop_at(step: int):
    """A progress callback that interrupts the fleet (as Ctrl-C does) at evaluation ``step``."""
    def progress(p):
        if p.step == step:
            raise KeyboardInterrupt
    return progress


def resumed(configs: list[RunConfig], stops: list[int], snapshot, seeds=SEEDS):
    """Train ``configs`` as a fleet interrupted at each evaluation in ``stops`` and resumed
    from its snapshot (saved at every evaluation) each time; the last, finished result."""
    for at in stops:
        with pytest.raises(Interrupted):
            train_fleet(configs, seeds, progress=stop_at(at), snapshot=snapshot,
                        snapshot_every=0)
        assert snapshot.is_file()
    return train_fleet(configs, seeds, snapshot=snapshot, snapshot_every=0)


def test_an_interrupted_fleet_resumes_from_its_snapshot_to_the_same_bytes(tmp_path):
    """Everything that carries between updates comes back: weights, AdamW/Adam/SGD-momentum
    state, warm-up, Grokfast's moving-average ring (the EMA is one more tensor of the same
    kind), the augmentation's and the sampler's generators, the step curriculum's advances,
    the history so far."""
    configs = [optimizer("grokfast_ma", window=4),  # the ring fills at update 4, then turns
               optimizer("sgd_nesterov"),
               optimizer("adam", lr=3e-3, warmup=25),  # warm-up across both interruptions
               CPU.replace(train={"aug": AUGMENTATIONS["combined30"]}),
               # a pool that grows at every evaluation (the step pacing's advances)
               CPU.replace(train={"curriculum": dataclasses.replace(
                   CURRICULA["step"], step_threshold=1e-6, step_size=0.1)})]
    snapshot = tmp_path / "fleet.pt"
    # stopped in the evaluation at update 20 (the snapshot of update 10 stays), then at 30
    fleet = resumed(configs, [20, 30], snapshot)
    assert fleet.resumed_from == 20 and fleet.updates == 10
    assert fleet.errors == [None] * len(configs)
    assert_same_as_alone(configs, fleet.results)


def test_a_resumed_fleet_keeps_its_measures_its_stopped_and_its_diverged_cells(tmp_path):
    # the one-layer transformer's Fourier measures at every evaluation
    arch = CPU.replace(model={"arch": "transformer1"}, train={"measures_every": 1})
    measured = [arch, arch.replace(optim={"lr": 3e-3})]
    fleet = resumed(measured, [20], tmp_path / "measured.pt")
    assert fleet.resumed_from == 10
    assert_same_as_alone(measured, fleet.results)
    assert len(fleet.results[0].measures) == 2 * 4

    # the cell that grokked (near update 120) has left the fleet, the one that diverged at
    # update 10 keeps its error; the interruption comes at 160
    leaky = CPU.replace(data={"p": 11, "train_fraction": 0.9}, model={"width": 64},
                        optim={"lr": 3e-3, "weight_decay": 0.0, "warmup": 10},
                        train={"steps": 200, "stop_after_grok": 20,
                               "aug": AUGMENTATIONS["combined30"]})
    runs_on = leaky.replace(train={"stop_after_grok": None}, optim={"lr": 1e-3})
    blows_up = dataclasses.replace(
        runs_on, optim=dataclasses.replace(P.optimizer(PARAMS, "sgd_nesterov"), lr=1e30))
    fleet = resumed([leaky, runs_on, blows_up], [160], tmp_path / "stops.pt")
    assert fleet.resumed_from == 150
    # the oracle: the same fleet uninterrupted (itself checked against the cells alone by
    # test_a_cell_that_stops_leaves_the_fleet_and_one_that_diverges_fails_alone)
    straight = train_fleet([leaky, runs_on, blows_up], SEEDS)
    for got, expected in zip(fleet.results[:2], straight.results[:2], strict=True):
        assert_same_result(got, expected)
    assert fleet.results[0].steps_done < 150 and fleet.results[1].steps_done == 200
    assert fleet.results[2] is None
    assert "loss became NaN/inf at update 10" in str(fleet.errors[2])


def test_a_snapshot_of_other_cells_or_an_unreadable_one_is_ignored(tmp_path, caplog):
    snapshot = tmp_path / "fleet.pt"
    with pytest.raises(Interrupted):
        train_fleet([CPU], SEEDS, progress=stop_at(20), snapshot=snapshot, snapshot_every=0)
    other = CPU.replace(optim={"lr": 3e-3})
    fleet = train_fleet([other], SEEDS, snapshot=snapshot)  # same file, another cell
    assert fleet.resumed_from == 0 and "saved by other cells" in caplog.text
    assert_same_as_alone([other], fleet.results)
    snapshot.write_bytes(b"half a file")
    fleet = train_fleet([CPU], SEEDS, snapshot=snapshot)
    assert fleet.resumed_from == 0 and "unreadable snapshot" in caplog.text
    # with no snapshot_every reached, nothing is written
    fresh = tmp_path / "fresh.pt"
    train_fleet([CPU], SEEDS, snapshot=fresh, snapshot_every=3600)
    assert not fresh.exists()
    # the snapshot's name: a hash of the cells and seeds, never a name from the parameters
    names = {snapshot_path(tmp_path, [c], s).name
             for c in (CPU, other) for s in (SEEDS, [0, 2])}
    assert len(names) == 4 and all(re.fullmatch(r"[0-9a-f]{24}\.pt", n) for n in names)


def test_source_digest_follows_the_imports_of_the_training_code(tmp_path, monkeypatch):
    """A module the fleet can import changes the digest; one it cannot does not."""
    import groklab.fleet as fleet

    package = tmp_path / "groklab"
    (package / "sub").mkdir(parents=True)
    (package / "fleet.py").write_text("from groklab import a\nfrom groklab.sub import b\n"
                                      "def f():\n    import groklab.c\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("from .d import x\n")
    for name in ("a", "c", "unused"):
        (package / f"{name}.py").write_text("x = 1\n")
    (package / "sub" / "d.py").write_text("x = 1\n")
    monkeypatch.setattr(fleet, "__file__", str(package / "fleet.py"))
    before = source_digest()
    for changed, counts in (("a.py", True), ("c.py", True), ("sub/b.py", True),
                            ("sub/d.py", True), ("unused.py", False)):
        path = package / changed
        original = path.read_text()
        path.write_text(original + "y = 2\n")
        assert (source_digest() != before) is counts, changed
        path.write_text(original)
    assert source_digest() == before

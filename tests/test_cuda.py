"""CUDA graphs on a GPU: captured against eager, reproducibility, members, fallback.

Every test skips without a CUDA device; ``scripts/gpu_check.sh`` runs them on one.
"""

import logging

import pytest
import torch
from pandas.testing import assert_frame_equal
from registry import AUGMENTATIONS, CURRICULA
from test_train import FAST_GROK, TINY
from torch import nn

from groklab.config import RunConfig
from groklab.models import build_model
from groklab.tasks import build_task
from groklab.train import resolve_engine, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

GPU = TINY.replace(data={"p": 31}, model={"width": 64},
                   train={"device": "cuda", "steps": 100, "batch_size": 256})
# Everything the step captures at once: augmentation, a paced pool, early-stop bookkeeping.
BUSY = GPU.replace(train={"aug": AUGMENTATIONS["combined30"], "curriculum": CURRICULA["linear"],
                          "stop_after_grok": 1000})


def close(a, b, atol=1e-4, rtol=1e-3):
    """Losses within float tolerance; accuracies within 1% (a logit tie a rounding apart
    can flip one prediction)."""
    accuracy = [c for c in a.columns if c.endswith("_acc")]
    assert_frame_equal(a.drop(columns=accuracy), b.drop(columns=accuracy), check_exact=False,
                       atol=atol, rtol=rtol)
    assert_frame_equal(a[accuracy], b[accuracy], check_exact=False, atol=0.01, rtol=0)


def no_fallback(caplog) -> None:
    assert not [r for r in caplog.records if "capture failed" in r.getMessage()]


def test_auto_engine_is_the_graphs_on_cuda():
    assert resolve_engine("auto", torch.device("cuda")) == "graph"


@pytest.mark.parametrize("cfg", [GPU, BUSY], ids=["plain", "augmented-paced"])
def test_captured_graphs_match_the_same_steps_run_eagerly(cfg, caplog):
    graphed = train(cfg, [0, 1, 2], engine="graph")
    eager = train(cfg, [0, 1, 2], engine="graph_eager")
    no_fallback(caplog)
    close(graphed.history, eager.history)
    close(graphed.final, eager.final)


def test_same_seed_twice_gives_the_same_history():
    cfg = BUSY.replace(train={"steps": 300})
    a, b = train(cfg, [0, 1, 2]), train(cfg, [0, 1, 2])
    assert_frame_equal(a.history, b.history, check_exact=True)
    assert_frame_equal(a.final, b.final, check_exact=True)


def test_member_trains_as_it_would_alone_or_among_ten():
    alone = train(BUSY, [0]).history
    for seeds in ([0, 1, 2], list(range(10))):
        together = train(BUSY, seeds).history
        close(together[together.seed == 0].reset_index(drop=True), alone)


@pytest.mark.parametrize("changes", [
    {"model": {"arch": "mlp"}},
    {"model": {"arch": "lstm"}},
    {"model": {"dropout": 0.1}},
    {"optim": {"kind": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True,
               "weight_decay": 0.0}},
    {"optim": {"kind": "adam", "weight_decay": 0.0}},
    {"train": {"batch_size": None}},
    {"train": {"curriculum": CURRICULA["step"]}},
    {"data": {"task": "permutation"}, "train": {"aug": AUGMENTATIONS["negation"]}},
    {"data": {"task": "parity", "concealed_bits": 4}, "model": {"arch": "bit_mlp"},
     "optim": {"kind": "sgd", "lr": 0.01, "weight_decay": 0.01, "warmup": 0}},
], ids=["mlp", "lstm", "dropout", "sgd_nesterov", "adam", "full_batch", "step_pool",
        "permutation_negation", "parity_bit_mlp"])
def test_every_study_configuration_is_captured(changes, caplog):
    cfg = GPU.replace(**changes)
    eager = train(cfg, [0, 1], engine="graph_eager")
    with caplog.at_level(logging.WARNING):
        graphed = train(cfg, [0, 1], engine="graph")
    no_fallback(caplog)
    if not cfg.model.dropout:  # dropout masks come from torch's generator, drawn anew
        close(graphed.history, eager.history)


class HostReading(nn.Module):
    """A model that reads a value back to the host in forward: not capturable."""

    def __init__(self, cfg: RunConfig):
        super().__init__()
        self.inner = build_model(cfg.model, build_task(cfg.data), [0])

    def forward(self, tokens):
        out = self.inner(tokens)
        if not torch.isfinite(out).all().item():
            raise ValueError("non-finite logits")
        return out


def test_capture_failure_falls_back_to_the_eager_loop_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING):
        fallback = train(GPU, [0], model_factory=HostReading, engine="graph")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "capture failed" in warnings[0].getMessage()
    plain = train(GPU, [0], model_factory=HostReading, engine="loop")
    close(fallback.history, plain.history, atol=1e-6, rtol=1e-5)


def test_early_stop_on_the_gpu_stops_where_the_loop_would():
    cfg = FAST_GROK.replace(train={"device": "cuda", "steps": 1500, "stop_after_grok": 40})
    full = train(cfg.replace(train={"stop_after_grok": None}), [0, 1])
    first = [int(h.step[h.val_acc >= 0.99].min()) for _, h in full.history.groupby("seed")]
    stopped = train(cfg, [0, 1])
    assert stopped.steps_done == max(first) + 40 == int(stopped.history.step.max())
    prefix = full.history[full.history.step <= stopped.steps_done].reset_index(drop=True)
    assert_frame_equal(stopped.history, prefix, check_exact=True)


def test_tf32_holds_only_while_its_cell_trains_and_stays_reproducible(caplog):
    """train.matmul_precision=high sets TF32 for the cell's own training (seen from its
    progress calls) and restores torch's setting after; the same seeds still give the same
    history twice, and a history that differs from full float32 in its losses."""
    before = torch.get_float32_matmul_precision()
    seen = set()
    cfg = GPU.replace(train={"matmul_precision": "high"})

    def progress(_):
        seen.add(torch.get_float32_matmul_precision())

    a = train(cfg, [0, 1, 2], progress=progress)
    b = train(cfg, [0, 1, 2])
    full = train(GPU, [0, 1, 2])
    no_fallback(caplog)
    assert seen == {"high"}
    assert torch.get_float32_matmul_precision() == before
    assert_frame_equal(a.history, b.history, check_exact=True)
    assert not a.history["val_loss"].equals(full.history["val_loss"])


def test_gpu_profile_counts_the_kernels_of_an_update():
    """benchmarks/gpu_profile.py: the kernels of eager steps, and graph replays timed."""
    from gpu_profile import kernel_table, replay_ms

    table = kernel_table(GPU, [0, 1, 2], updates=20, top=5)
    assert table["kernels_per_update"] > 20 and table["kernel_us_per_update"] > 0
    assert len(table["top"]) == 5
    assert replay_ms(GPU, [0, 1, 2], updates=20) > 0


def test_graphed_run_measures_outside_the_graphs_as_the_eager_step_does(caplog):
    """The captured engine measures at the due steps (every 2nd evaluation and the last
    update), between replays; the values equal the eager graph step's (same draws), and
    the last row equals the measures recomputed from the seed's checkpoint on the CPU."""
    from groklab.checkpoint import checkpoint, load_model
    from groklab.fourier import progress_measures

    cfg = GPU.replace(data={"p": 23}, train={"measures_every": 2, "steps": 95})
    with caplog.at_level(logging.WARNING):
        captured = train(cfg, [0, 1], engine="graph")
    no_fallback(caplog)
    eager = train(cfg, [0, 1], engine="graph_eager")
    m = captured.measures
    assert m[m.seed == 0].step.tolist() == [0, 20, 40, 60, 80, 95]
    cols = ["restricted_loss", "excluded_loss", "grid_loss", "gini", "weight_norm_sq"]
    assert_frame_equal(m[cols], eager.measures[cols], check_exact=False, atol=1e-4, rtol=1e-3)
    task = build_task(cfg.data, [0, 1])
    ckpt = checkpoint(captured.model, captured.config, [0, 1], 1, captured.steps_done)
    ckpt["config"]["train"]["device"] = "cpu"
    model = load_model(ckpt)
    split = task.split(cfg.data.train_fraction, 1)
    mask = torch.zeros(1, len(task), dtype=torch.bool)
    mask[0, split.train] = True
    again = progress_measures(model, task.tokens, task.labels, mask, 23)
    last = m[(m.seed == 1) & (m.step == 95)].iloc[0]
    for col in cols:
        assert last[col] == pytest.approx(float(again.values[col][0]), rel=1e-3, abs=1e-4), col


def test_fleet_members_train_as_their_cells_do_alone_on_the_plain_loop():
    """On a GPU a fleet (groklab.fleet) uses the plain loop's draws; batched kernels may
    round differently from a lone cell's, so the histories agree within float tolerance."""
    from groklab.fleet import train_fleet

    cells = [GPU, GPU.replace(train={"aug": AUGMENTATIONS["combined30"]}),
             GPU.replace(train={"curriculum": CURRICULA["linear"]}),
             GPU.replace(optim={"lr": 3e-3})]
    fleet = train_fleet(cells, [0, 1, 2])
    for cfg, got in zip(cells, fleet.results, strict=True):
        alone = train(cfg, [0, 1, 2], engine="loop")
        close(got.history, alone.history)
        close(got.final, alone.final)

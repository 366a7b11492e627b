"""Named optimiser variants build what they name; warm-up against hand-computed factors."""

import copy
import subprocess
import sys

import pytest
import torch
from registry import OPTIMIZERS, PARAMS

from groklab.config import ConfigError, OptimConfig, RunConfig
from groklab.models import Transformer, build_model
from groklab.optim import build_optimizer, build_schedule, warmup_factor
from groklab.params import run_config
from groklab.tasks import build_task


def variant(name: str, params=PARAMS, **changes) -> RunConfig:
    """The base run of x_plus_y with optimizer variant ``name`` (and other ``changes``)."""
    return run_config(params, "x_plus_y", {"train.optimizer": name, **changes})

# What each variant must build, written out by hand from the papers' settings:
# (optimizer class, lr, betas or None, weight_decay, momentum or None, nesterov or None,
#  batch_size, dropout)
EXPECTED = {
    "adamw": (torch.optim.AdamW, 1e-3, (0.9, 0.98), 0.5, None, None, 512, 0.0),
    "adamw_fullbatch": (torch.optim.AdamW, 1e-3, (0.9, 0.98), 0.5, None, None, None, 0.0),
    "adam": (torch.optim.Adam, 1e-3, (0.9, 0.98), 0.0, None, None, 512, 0.0),
    "sgd_nesterov": (torch.optim.SGD, 0.1, None, 0.0, 0.9, True, 512, 0.0),
    "dropout": (torch.optim.AdamW, 1e-3, (0.9, 0.98), 0.5, None, None, 512, 0.1),
    "wd_0p05": (torch.optim.AdamW, 1e-3, (0.9, 0.98), 0.05, None, None, 512, 0.0),
    "wd_1p0": (torch.optim.AdamW, 1e-3, (0.9, 0.98), 1.0, None, None, 512, 0.0),
    "sgd_parity": (torch.optim.SGD, 0.01, None, 0.01, 0.0, False, 512, 0.0),
    # Nanda et al.'s progress-measures setting: full batch, weight decay 1
    "adamw_nanda": (torch.optim.AdamW, 1e-3, (0.9, 0.98), 1.0, None, None, None, 0.0),
    # The accelerators (Grokfast's main.py: Adam, L2 in the filtered runs; their controls at
    # lr x the filter's gain, 2.8342 and 5.1640; docs/accelerators.md)
    "adamw_nowd": (torch.optim.AdamW, 1e-3, (0.9, 0.98), 0.0, None, None, 512, 0.0),
    "grokfast_ema": (torch.optim.Adam, 1e-3, (0.9, 0.98), 0.005, None, None, 512, 0.0),
    "grokfast_ema_lr": (torch.optim.Adam, 2.8342e-3, (0.9, 0.98), 0.005, None, None, 512, 0.0),
    "grokfast_ma": (torch.optim.Adam, 1e-3, (0.9, 0.98), 0.01, None, None, 512, 0.0),
    "grokfast_ma_lr": (torch.optim.Adam, 5.164e-3, (0.9, 0.98), 0.01, None, None, 512, 0.0),
    "stablemax": (torch.optim.AdamW, 1e-3, (0.9, 0.98), 0.0, None, None, 512, 0.0),
    "orthograd": (torch.optim.AdamW, 1e-3, (0.9, 0.98), 0.0, None, None, 512, 0.0),
}


def small(cfg: RunConfig) -> RunConfig:
    """A small task for building models quickly; the optimiser section is left alone."""
    return cfg.replace(data={"p": 11}, model={"width": 32, "heads": 4})


def test_every_variant_has_an_expectation():
    assert set(OPTIMIZERS) == set(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_variant_builds_what_it_names(name):
    cls, lr, betas, wd, momentum, nesterov, batch_size, dropout = EXPECTED[name]
    cfg = variant(name)
    assert cfg.train.batch_size == batch_size
    assert cfg.model.dropout == dropout
    model = build_model(small(cfg).model, build_task(small(cfg).data), [0])
    opt = build_optimizer(cfg.optim, model.parameters())
    # torch's class itself is the base (AdamW subclasses Adam in recent torch: exactly)
    assert type(opt).__mro__[1] is cls
    group = opt.param_groups[0]
    for values in (group, opt.defaults):
        assert values["lr"] == pytest.approx(lr)
        assert values["weight_decay"] == pytest.approx(wd)
        if betas is not None:
            assert tuple(values["betas"]) == pytest.approx(betas)
        if momentum is not None:
            assert values["momentum"] == pytest.approx(momentum)
            assert values["nesterov"] is nesterov
    # every parameter is optimised, all in one group
    assert len(opt.param_groups) == 1
    assert {id(p) for p in group["params"]} == {id(p) for p in model.parameters()}


def test_adam_uses_no_decay_of_any_kind():
    cfg = variant("adam")
    opt = build_optimizer(cfg.optim, [torch.nn.Parameter(torch.ones(3))])
    assert not isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["weight_decay"] == 0
    assert not opt.defaults.get("decoupled_weight_decay", False)


def test_adamw_decays_decoupled():
    # one AdamW step from zero gradient: the update is exactly -lr * wd * w (no Adam term)
    cfg = variant("wd_1p0")
    w = torch.nn.Parameter(torch.full((4,), 2.0))
    opt = build_optimizer(cfg.optim, [w])
    w.grad = torch.zeros_like(w)
    opt.step()
    assert w.detach().tolist() == pytest.approx([2.0 * (1 - 1e-3 * 1.0)] * 4)


def test_sgd_nesterov_step_matches_hand_computation():
    # SGD with nesterov: b1 = g; update = g + momentum * b1 = 1.9 g for the first step
    cfg = variant("sgd_nesterov")
    w = torch.nn.Parameter(torch.zeros(2))
    opt = build_optimizer(cfg.optim, [w])
    w.grad = torch.tensor([1.0, -2.0])
    opt.step()
    assert w.detach().tolist() == pytest.approx([-0.1 * 1.9, 0.1 * 3.8])


TORCH_KINDS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def _torch_own(cfg: OptimConfig, params: list, lr: torch.Tensor | None) -> torch.optim.Optimizer:
    """What build_optimizer builds, written with torch's own classes (the oracle)."""
    rate = cfg.lr if lr is None else lr
    graph = {} if lr is None else {"capturable": True}
    if cfg.kind == "sgd":
        return torch.optim.SGD(params, lr=rate, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay, **({} if lr is None else
                                                                 {"fused": True}))
    decay = cfg.weight_decay if cfg.kind == "adamw" else 0.0
    return TORCH_KINDS[cfg.kind](params, lr=rate, betas=cfg.betas, weight_decay=decay,
                                 fused=True, **graph)


@pytest.mark.parametrize("tensor_lr", [False, True], ids=["float-lr", "tensor-lr"])
@pytest.mark.parametrize("name", ["adamw", "adam", "sgd_nesterov", "sgd_parity"])
def test_optimizer_steps_are_torch_own_bit_for_bit(name, tensor_lr):
    """Ten steps of random gradients, with zero_grad between, give the same bits as torch's
    own optimiser class with the same settings: weights and every state tensor."""
    cfg = variant(name).optim
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(5, 3, generator=gen), torch.randn(7, generator=gen)]
    grads = [[torch.randn(t.shape, generator=gen) for t in init] for _ in range(10)]
    runs = []
    for build in (lambda ps, lr: build_optimizer(cfg, ps, lr), lambda ps, lr:
                  _torch_own(cfg, ps, lr)):
        params = [torch.nn.Parameter(t.clone()) for t in init]
        lr = torch.tensor(cfg.lr) if tensor_lr else None
        opt = build(params, lr)
        for step_grads in grads:
            opt.zero_grad(set_to_none=True)
            for p, g in zip(params, step_grads, strict=True):
                p.grad = g.clone()
            opt.step()
        state = [t for p in params for t in opt.state[p].values() if torch.is_tensor(t)]
        runs.append([p.detach() for p in params] + state)
    ours, theirs = runs
    # per parameter: Adam keeps step, exp_avg and exp_avg_sq; SGD a momentum buffer if any
    state = {"adamw": 3, "adam": 3, "sgd_nesterov": 1, "sgd_parity": 0}[name]
    assert len(ours) == len(theirs) == 2 * (1 + state)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)


def test_optimizers_never_import_torch_dynamo():
    """torch's own methods import torch._dynamo (about 1 s) at their first call."""
    code = """
import sys
import torch
from groklab.config import OptimConfig
from groklab.optim import build_optimizer, build_schedule
for kind in ("adamw", "adam", "sgd"):
    for lr in (None, torch.tensor(0.1)):
        cfg = OptimConfig(kind=kind, lr=0.1, momentum=0.9 if kind == "sgd" else 0.0,
                          weight_decay=0.0 if kind == "adam" else 0.1, warmup=2)
        w = torch.nn.Parameter(torch.ones(3))
        opt = build_optimizer(cfg, [w], lr)
        schedule = build_schedule(cfg, opt) if lr is None else None
        for _ in range(2):
            opt.zero_grad()
            (w * w).sum().backward()
            opt.step()
            if schedule:
                schedule.step()
print("torch._dynamo" in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip() == "False"


def test_dropout_variant_applies_dropout_in_training_only():
    cfg = small(variant("dropout"))
    assert cfg.model.dropout == 0.1
    task = build_task(cfg.data)
    model = build_model(cfg.model, task, [0])
    assert isinstance(model, Transformer)
    tokens = task.tokens[:64]
    torch.manual_seed(0)
    model.train()
    a, b = model(tokens), model(tokens)
    assert not torch.allclose(a, b)
    model.eval()
    with torch.no_grad():
        c, d = model(tokens), model(tokens)
    assert torch.equal(c, d)


def test_variants_without_dropout_are_deterministic_in_training_mode():
    cfg = small(variant("adamw"))
    task = build_task(cfg.data)
    model = build_model(cfg.model, task, [0]).train()
    tokens = task.tokens[:64]
    assert torch.allclose(model(tokens), model(tokens))


def test_variant_keeps_the_rest_of_the_config():
    changes = {"data.p": 31, "train.steps": 10, "train.batch_size": 64, "model.dropout": 0.2}
    base, cfg = variant("adamw", **changes), variant("sgd_nesterov", **changes)
    assert cfg.data == base.data
    assert cfg.model == base.model  # the variant sets no dropout: unchanged
    assert cfg.train == base.train  # nor a batch size
    assert cfg.optim == OptimConfig(name="sgd_nesterov", kind="sgd", lr=0.1, momentum=0.9,
                                    nesterov=True, weight_decay=0.0, warmup=50)


def test_resolving_a_variant_does_not_change_params():
    before = copy.deepcopy(PARAMS)
    for name in OPTIMIZERS:
        variant(name)
    assert before == PARAMS
    assert PARAMS["optimizers"]["adamw_fullbatch"]["batch_size"] is None
    assert PARAMS["optimizers"]["dropout"]["dropout"] == 0.1


def test_variant_from_a_custom_registry():
    params = {**PARAMS, "optimizers": {"tiny": {"kind": "sgd", "lr": 0.5, "momentum": 0.0,
                                                 "nesterov": False, "weight_decay": 0.0,
                                                 "warmup": 0, "batch_size": 8}}}
    cfg = variant("tiny", params)
    assert (cfg.optim.kind, cfg.optim.lr, cfg.train.batch_size) == ("sgd", 0.5, 8)
    with pytest.raises(ConfigError, match="'adamw' is not in `optimizers`"):
        variant("adamw", params)  # not in the given registry


def test_unknown_variant_names_it_and_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        variant("adamw_typo")
    msg = str(err.value)
    assert "adamw_typo" in msg
    for name in ["adamw", "adamw_fullbatch", "adam", "sgd_nesterov", "dropout", "wd_0p05",
                 "wd_1p0", "sgd_parity"]:
        assert name in msg


# --- warm-up -------------------------------------------------------------------------------


def test_warmup_factor_hand_values():
    # warmup 4: (t + 1) / 4 for t = 0..3, then 1
    assert [warmup_factor(t, 4) for t in range(7)] == pytest.approx(
        [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0])
    # warmup 50: 1/50, 2/50, ..., 1 at t = 49
    assert warmup_factor(0, 50) == pytest.approx(0.02)
    assert warmup_factor(24, 50) == pytest.approx(0.5)
    assert warmup_factor(49, 50) == pytest.approx(1.0)
    assert warmup_factor(1000, 50) == 1.0
    assert [warmup_factor(t, 1) for t in range(3)] == [1.0, 1.0, 1.0]
    assert [warmup_factor(t, 0) for t in (0, 1, 100)] == [1.0, 1.0, 1.0]


def test_warmup_first_update_moves_the_weights():
    assert warmup_factor(0, 50) > 0


@pytest.mark.parametrize(("warmup", "factors"), [
    (4, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]),
    (0, [1.0] * 6),
    (1, [1.0] * 6),
])
def test_schedule_gives_warmed_up_learning_rate_per_update(warmup, factors):
    # plain SGD on loss = sum(w): each update moves w by exactly -lr_t, so the weights
    # show which learning rate each opt.step() really used
    cfg = OptimConfig(kind="sgd", lr=0.1, weight_decay=0.0, warmup=warmup)
    w = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer(cfg, [w])
    schedule = build_schedule(cfg, opt)
    lrs, moved, expected_w = [], [], 0.0
    for factor in factors:
        lrs.append(opt.param_groups[0]["lr"])
        opt.zero_grad()
        w.sum().backward()
        before = w.item()
        opt.step()
        schedule.step()
        moved.append(before - w.item())
        expected_w -= 0.1 * factor
    assert lrs == pytest.approx([0.1 * f for f in factors])
    assert moved == pytest.approx([0.1 * f for f in factors])
    assert w.item() == pytest.approx(expected_w)


def test_schedule_for_the_adamw_preset():
    cfg = variant("adamw")
    w = torch.nn.Parameter(torch.ones(2))
    opt = build_optimizer(cfg.optim, [w])
    schedule = build_schedule(cfg.optim, opt)
    lrs = []
    for _ in range(52):
        lrs.append(opt.param_groups[0]["lr"])
        opt.zero_grad()
        w.sum().backward()
        opt.step()
        schedule.step()
    assert lrs[:3] == pytest.approx([1e-3 / 50, 2e-3 / 50, 3e-3 / 50])
    assert lrs[49:] == pytest.approx([1e-3] * 3)

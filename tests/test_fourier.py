"""Fourier progress measures against independent oracles: analytic cosine logits, random
logits, hand-computed Gini values, embeddings set to known cosines, plain-Python sums."""

import math

import pytest
import torch

from groklab.config import DataConfig, ModelConfig
from groklab.fourier import (
    fourier_basis,
    frequency_norms,
    gini,
    key_frequencies,
    logit_losses,
    progress_measures,
    squared_weight_norm,
)
from groklab.models import build_model
from groklab.tasks import build_task

P = 23


def grid(p: int, op: str = "+") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """a, b and the label s = a ± b mod p over the whole grid, row order a-major."""
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    s = (a + b) % p if op == "+" else (a - b) % p
    return a, b, s


def cosine_logits(p: int, freqs: list[int], scale: float, op: str = "+") -> torch.Tensor:
    """ℓ(a, b, c) = scale · Σ_k cos(2πk(s − c)/p), (1, p², p), by plain Python."""
    _, _, s = grid(p, op)
    rows = [[scale * sum(math.cos(2 * math.pi * k * (int(si) - c) / p) for k in freqs)
             for c in range(p)] for si in s]
    return torch.tensor(rows, dtype=torch.float64).unsqueeze(0)


def mask_of(p: int, freqs: list[int]) -> torch.Tensor:
    key = torch.zeros(1, p // 2, dtype=torch.bool)
    for k in freqs:
        key[0, k - 1] = True
    return key


def half_train(p: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.rand(1, p * p, generator=g) < 0.5)


@pytest.mark.parametrize("op", ["+", "-"])
def test_cosine_logits_restricted_equals_full_and_excluded_is_chance(op):
    freqs = [3, 7]
    logits = cosine_logits(P, freqs, scale=4.0, op=op)
    _, _, s = grid(P, op)
    out = logit_losses(logits, s, mask_of(P, freqs), half_train(P))
    # The logits lie in the key frequencies' span: restricting them changes nothing.
    assert out["restricted_loss"].item() == pytest.approx(out["grid_loss"].item(), abs=1e-9)
    assert out["grid_loss"].item() < 0.5  # the cosines solve the task
    # Removing the key components leaves constant logits: loss log p, uniform guessing.
    assert out["excluded_loss"].item() == pytest.approx(math.log(P), abs=1e-9)


def test_cosine_logits_restricted_to_other_frequencies_is_chance():
    logits = cosine_logits(P, [3, 7], scale=4.0)
    _, _, s = grid(P)
    out = logit_losses(logits, s, mask_of(P, [5]), half_train(P))
    assert out["restricted_loss"].item() == pytest.approx(math.log(P), abs=1e-9)
    assert out["excluded_loss"].item() == pytest.approx(out["grid_loss"].item(), abs=1e-9)


def test_random_logits_have_high_restricted_loss():
    g = torch.Generator().manual_seed(1)
    logits = 5 * torch.randn(1, P * P, P, generator=g, dtype=torch.float64)
    _, _, s = grid(P)
    out = logit_losses(logits, s, mask_of(P, [1, 2, 3]), half_train(P))
    # Random logits carry almost nothing along cos(w(s - c)): close to uniform guessing.
    assert out["restricted_loss"].item() > 0.9 * math.log(P)


def test_memorised_training_logits_have_low_excluded_loss():
    """Logits that are large only on each training example's label (a lookup table) are
    hardly touched by removing a few frequencies: excluded loss stays low."""
    _, _, s = grid(P)
    train = half_train(P)
    logits = torch.zeros(1, P * P, P, dtype=torch.float64)
    logits[0, torch.arange(P * P), s] = 20.0 * train[0].double()
    out = logit_losses(logits, s, mask_of(P, [2, 9]), train)
    assert out["excluded_loss"].item() < 0.1


def test_gini_by_hand():
    one_hot = torch.tensor([[0.0, 0.0, 5.0, 0.0]])
    flat = torch.tensor([[2.0, 2.0, 2.0, 2.0]])
    assert gini(one_hot).item() == pytest.approx(1 - 1 / 4)
    assert gini(flat).item() == pytest.approx(0.0)
    # [1, 2, 3]: Σ|xi - xj| = 2·(1 + 2 + 1) = 8; 8 / (2 · 9 · 2) = 2/9.
    assert gini(torch.tensor([[1.0, 2.0, 3.0]])).item() == pytest.approx(2 / 9)


def test_fourier_basis_is_orthonormal():
    for p in (7, 8, 23):
        b = fourier_basis(p)
        nonzero = b.norm(dim=1) > 0
        gram = b[nonzero] @ b[nonzero].T
        torch.testing.assert_close(gram, torch.eye(int(nonzero.sum()), dtype=gram.dtype))
        assert torch.allclose(b.sum(1), torch.zeros(len(b), dtype=b.dtype), atol=1e-9)


def test_embedding_of_known_cosines_has_those_key_frequencies():
    """A model whose number embeddings are cos/sin at frequencies 2 and 5 (plus a little
    noise) has exactly those key frequencies and a high Gini; a random one has none."""
    cfg = DataConfig(task="x_plus_y", p=P, train_fraction=0.5)
    task = build_task(cfg, [0])
    model = build_model(ModelConfig(width=16, layers=1, heads=2), task, [0, 1])
    x = torch.arange(P, dtype=torch.float32)
    with torch.no_grad():
        emb = 0.01 * torch.randn(P, 16, generator=torch.Generator().manual_seed(2))
        for j, k in enumerate((2, 5)):
            emb[:, 4 * j] += torch.cos(2 * math.pi * k * x / P)
            emb[:, 4 * j + 1] += torch.sin(2 * math.pi * k * x / P)
        model.tok.weight[0, :P] = emb
    train_mask = torch.zeros(2, P * P, dtype=torch.bool)
    train_mask[:, ::2] = True
    m = progress_measures(model, task.tokens, task.labels, train_mask, P)
    assert (m.key[0].nonzero().flatten() + 1).tolist() == [2, 5]
    assert m.key[1].sum() == 0  # member 1 keeps its N(0, 1) initialisation
    assert m.values["gini"][0] > 0.75 > m.values["gini"][1]
    # Norms by hand: frequency 2 carries |cos|² + |sin|² = p/2 + p/2 = p.
    assert m.norms[0, 1].item() == pytest.approx(math.sqrt(P), rel=0.05)


def test_frequency_norms_plain_python():
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(1, 7, 3, generator=g, dtype=torch.float64)
    norms = frequency_norms(emb)
    for k in (1, 2, 3):
        total = 0.0
        for f in (math.cos, math.sin):
            v = [f(2 * math.pi * k * x / 7) for x in range(7)]
            n2 = sum(t * t for t in v)
            for d in range(3):
                dot = sum(v[x] * emb[0, x, d].item() for x in range(7))
                total += dot * dot / n2
        assert norms[0, k - 1].item() == pytest.approx(math.sqrt(total))


def test_key_frequencies_rule():
    norms = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.1, 3.0, 0.1, 0.1]])
    assert key_frequencies(norms).tolist() == [[False] * 4, [False, True, False, False]]


def test_squared_weight_norm_plain_sum():
    cfg = DataConfig(task="x_plus_y", p=7, train_fraction=0.5)
    model = build_model(ModelConfig(width=8, layers=1, heads=2), build_task(cfg, [0]), [0, 1])
    got = squared_weight_norm(model)
    for i in range(2):
        want = sum(float((prm[i].detach().double() ** 2).sum()) for prm in model.parameters())
        assert got[i].item() == pytest.approx(want)


# --- Measured during training ------------------------------------------------------------

def tiny(p: int = 13, **train):
    from groklab.config import RunConfig

    return RunConfig().replace(
        data={"p": p}, model={"width": 32, "heads": 2},
        train={"steps": 35, "batch_size": 64, "eval_every": 5, "measures_every": 2,
               "device": "cpu", **train})


@pytest.mark.parametrize("engine", ["loop", "graph_eager"])
def test_measures_cadence_and_checkpoint_recomputes_the_last_row(engine, tmp_path):
    """Measured at steps 0, 10, 20, 30 and the last update 35, per seed; the final row
    equals the measures recomputed from the saved checkpoint of that seed."""
    from groklab.checkpoint import checkpoint, load_model
    from groklab.train import train

    res = train(tiny(), [0, 1], engine=engine)
    m = res.measures
    assert m.seed.tolist() == [0] * 5 + [1] * 5
    assert m.step.tolist() == [0, 10, 20, 30, 35] * 2
    assert list(res.history.columns) == ["seed", "step", "train_loss", "train_acc",
                                         "batch_loss", "batch_acc", "val_loss", "val_acc",
                                         "clean_val_acc", "lr", "softmax_collapse"]
    # (history.csv's columns are not the measures': those are measures.csv's)
    assert [c for c in m.columns if c.startswith("freq_")] == [f"freq_{k}" for k in range(1, 7)]
    task = build_task(res.config.data, [0, 1])
    for i, seed in enumerate((0, 1)):
        path = tmp_path / f"seed{seed}.pt"
        torch.save(checkpoint(res.model, res.config, [0, 1], i, res.steps_done), path)
        model = load_model(torch.load(path, weights_only=False))
        split = task.split(res.config.data.train_fraction, seed)
        mask = torch.zeros(1, len(task), dtype=torch.bool)
        mask[0, split.train] = True
        again = progress_measures(model, task.tokens, task.labels, mask, 13)
        last = m[(m.seed == seed) & (m.step == 35)].iloc[0]
        for col in ("restricted_loss", "excluded_loss", "grid_loss", "gini", "weight_norm_sq"):
            assert last[col] == pytest.approx(float(again.values[col][0]), rel=1e-5), col
        assert last["freq_3"] == pytest.approx(float(again.norms[0, 2]), rel=1e-5)


def test_no_measures_for_tasks_without_a_fourier_basis_or_when_off():
    from groklab.train import train

    assert train(tiny(), [0], engine="loop").measures is not None
    assert train(tiny(measures_every=0), [0], engine="loop").measures is None
    div = tiny().replace(data={"task": "x_div_y"})
    assert train(div, [0], engine="loop").measures is None

"""Tasks against plain-Python arithmetic and permutation composition."""

import itertools

import pytest
import torch

from groklab.config import (
    ConfigError,
    DataConfig,
    RunConfig,
    chance_accuracy,
    n_classes,
    n_equations,
)
from groklab.tasks import (
    ModularTask,
    ParityTask,
    PermutationTask,
    Split,
    build_task,
    split,
    val_in_train,
)


@pytest.mark.parametrize("p", [7, 13])
def test_binary_modular_labels_match_python(p):
    oracles = {
        "x_plus_y": lambda a, b: (a + b) % p,
        "x_minus_y": lambda a, b: (a - b) % p,
        "x_div_y": lambda a, b: (a * pow(b, -1, p)) % p,
        "x_mul_y": lambda a, b: (a * b) % p,
    }
    for name, oracle in oracles.items():
        task = ModularTask(name, p)
        pairs = [(a, b) for a in range(p) for b in range(p)
                 if name not in ("x_div_y", "x_mul_y") or b]
        assert sorted(map(tuple, task.operands.tolist())) == sorted(pairs)
        for (a, b), y in zip(task.operands.tolist(), task.labels.tolist(), strict=True):
            assert y == oracle(a, b), (name, a, b)


def test_x_mul_y_is_grokfast_table_and_its_augmentations_stay_valid():
    """Grokfast's code: x in [0, p), y in [1, p) (so p(p - 1) rows, x = 0 kept, y = 0 not);
    reversal of (0, b) would put 0 second, so the task calls it invalid; negation of the
    first operand keeps y and relabels as plain arithmetic says."""
    p = 11
    task = ModularTask("x_mul_y", p)
    assert len(task) == p * (p - 1) == n_equations(DataConfig(task="x_mul_y", p=p))
    assert (0, 3) in set(map(tuple, task.operands.tolist()))
    ops = torch.tensor([[0, 3], [4, 5]])
    assert task.valid(task.reverse(ops)).tolist() == [False, True]
    neg = task.negate(ops)
    assert neg.tolist() == [[0, 3], [(-4) % p, 5]]
    assert task.label(neg).tolist() == [0, ((-4) * 5) % p]
    assert task.index(task.operands).tolist() == list(range(len(task)))
    with pytest.raises(ConfigError, match="p=12 is not prime, so x_mul_y"):
        DataConfig(task="x_mul_y", p=12)


def test_division_checks_its_own_answer():
    task = ModularTask("x_div_y", 11)
    a, b, c = task.operands[:, 0], task.operands[:, 1], task.labels
    assert torch.equal((c * b) % 11, a)  # c = a / b  <=>  c * b = a (mod p)


def test_multi_add_labels_and_tokens():
    task = ModularTask("multi_add", 5, k=3)
    assert len(task) == 125
    for ops, y in zip(task.operands.tolist(), task.labels.tolist(), strict=True):
        assert y == sum(ops) % 5
    x1, x2, x3 = task.operands[17].tolist()
    assert task.tokens[17].tolist() == [x1, 5, x2, 5, x3, 6]
    assert task.prefix_len == 2 and task.seq_len == 6


def test_permutation_composition_matches_python():
    task = PermutationTask(5)
    perms = list(itertools.permutations(range(5)))
    assert len(task) == 120 * 120
    for row in range(0, len(task), 37):
        a, b = task.operands[row].tolist()
        pa, pb = perms[a], perms[b]
        composed = tuple(pa[pb[i]] for i in range(5))
        assert perms[task.labels[row]] == composed
    for i, p in enumerate(perms):  # negate is the group inverse
        inv = perms[task.negate(torch.tensor([i, 0]))[0]]
        assert tuple(p[inv[j]] for j in range(5)) == tuple(range(5))


def test_encodings():
    full = ModularTask("x_plus_y", 7)
    compact = ModularTask("x_plus_y", 7, encoding="compact")
    row = full.operands.tolist().index([3, 5])
    assert full.tokens[row].tolist() == [3, 7, 5, 8]
    assert compact.tokens[row].tolist() == [3, 5, 8]
    assert full.vocab_size == 9 and full.n_classes == 7


def test_parity_labels_are_parity_of_first_bits_only():
    task = ParityTask(k=3, n=20, examples=500)
    assert task.tokens.shape == (500, 23)
    for bits, y in zip(task.operands.tolist(), task.labels.tolist(), strict=True):
        assert y == sum(bits[:3]) % 2
    assert set(task.operands.unique().tolist()) == {0, 1}


def test_split_is_deterministic_disjoint_and_sized():
    a, b = split(100, 0.3, seed=4), split(100, 0.3, seed=4)
    assert torch.equal(a.train, b.train) and torch.equal(a.val, b.val)
    assert len(a.train) == 30 and len(a.val) == 70
    assert sorted(a.train.tolist() + a.val.tolist()) == list(range(100))
    assert not torch.equal(split(100, 0.3, seed=5).train, a.train)


def test_sizes_without_building_match_built_tasks():
    """config's arithmetic (no torch) against the tables tasks.build_task makes."""
    for cfg in [DataConfig(task="x_div_y", p=13), DataConfig(task="multi_add", p=5, operands=3),
                DataConfig(task="permutation"), DataConfig(task="x_minus_y", p=11),
                DataConfig(task="parity", parity_bits=3, concealed_bits=2, parity_examples=20)]:
        task = build_task(cfg)
        per_seed = len(task.operands) if cfg.task == "parity" else len(task)  # one seed
        assert n_equations(cfg) == per_seed
        assert n_classes(cfg) == task.n_classes
        assert chance_accuracy(cfg) == 1 / task.n_classes


@pytest.mark.parametrize("kwargs, words", [
    ({"task": "x_times_y"}, ["x_times_y", "x_plus_y"]),
    ({"task": "x_div_y", "p": 96}, ["p=96", "prime"]),
    ({"train_fraction": 1.5}, ["train_fraction=1.5", "between 0 and 1"]),
    ({"train_fraction": 0.0}, ["train_fraction=0.0"]),
    ({"encoding": "onehot"}, ["onehot", "full", "compact"]),
])
def test_bad_data_config_names_value_and_allowed(kwargs, words):
    with pytest.raises(ConfigError) as err:
        DataConfig(**kwargs)
    for word in words:
        assert word in str(err.value)


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="unknown key.*stepz.*known keys"):
        RunConfig().replace(train={"stepz": 3})


def test_tiny_split_that_empties_a_side_is_refused():
    with pytest.raises(ConfigError, match="empty training split"):
        split(10, 0.05, seed=0)


def _vectors(task, idx):
    return {tuple(row) for row in task.operands[idx].tolist()}


@pytest.mark.parametrize("n", [4, 8, 12])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parity_split_shares_no_vector_between_training_and_validation(n, seed):
    task = ParityTask(k=3, n=n, examples=1000, seeds=[0, 1, 2])
    sp = task.split(0.75, seed)
    train, val = task.operands[sp.train].tolist(), task.operands[sp.val].tolist()
    # Brute force: every validation vector against every training vector.
    assert not any(v == t for v in val for t in train)
    assert len(set(map(tuple, train + val))) == len(train) + len(val)  # all distinct
    assert len(train) + len(val) == min(1000, 2 ** (3 + n))


def test_parity_with_fewer_vectors_than_asked_uses_all_of_them():
    task = ParityTask(k=3, n=4, examples=1000, seeds=[5])
    sp = task.split(0.75, 5)
    every = {tuple((c >> s) & 1 for s in range(6, -1, -1)) for c in range(128)}
    assert _vectors(task, torch.cat([sp.train, sp.val])) == every
    assert (len(sp.train), len(sp.val)) == (96, 32)


def test_parity_draw_depends_on_the_seed():
    task = ParityTask(k=3, n=20, examples=200, seeds=[0, 1])
    a, b = task.split(0.5, 0), task.split(0.5, 1)
    assert _vectors(task, a.train) != _vectors(task, b.train)
    again = ParityTask(k=3, n=20, examples=200, seeds=[1])
    assert _vectors(again, again.split(0.5, 1).train) == _vectors(task, b.train)


def test_val_in_train_against_a_brute_force_count():
    # Rows 0 and 2 are the same input: with 0 in training, validation row 2 is a copy.
    tokens = torch.tensor([[0, 1], [1, 1], [0, 1], [1, 0], [1, 1]])
    sp = Split(train=torch.tensor([0, 3]), val=torch.tensor([1, 2, 4]))
    train_rows = [tokens[i].tolist() for i in sp.train]
    expected = sum(tokens[i].tolist() in train_rows for i in sp.val) / len(sp.val)
    assert expected == pytest.approx(1 / 3)
    assert val_in_train(tokens, sp) == pytest.approx(expected)
    modular = ModularTask("x_plus_y", 11)
    assert val_in_train(modular.tokens, modular.split(0.5, 0)) == 0.0

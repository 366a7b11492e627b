"""Augmentation: valid, correctly labelled examples; leakage against brute force."""

import itertools

import pytest
import torch
from registry import AUGMENTATIONS, PARAMS

from groklab.augment import augment, get_augmentation, reachable, val_reachable
from groklab.config import ConfigError
from groklab.params import augmentation
from groklab.tasks import ModularTask, ParityTask, PermutationTask, split

P = 11
ORACLE = {
    "x_plus_y": lambda a, b: (a + b) % P,
    "x_minus_y": lambda a, b: (a - b) % P,
    "x_div_y": lambda a, b: (a * pow(b, -1, P)) % P,
}


def python_images(name, a, b, aug):
    """Every pair an augmentation can produce from (a, b), written out by hand."""
    def rev(x, y):
        if name == "x_div_y" and x == 0:  # would divide by zero: keep the original
            return x, y
        return y, x

    def neg(x, y):
        return ((-x) % P, y) if name == "x_div_y" else ((-x) % P, (-y) % P)

    out = {(a, b)}
    if aug.p_reverse:
        out |= {rev(*o) for o in list(out)}
    if aug.p_negate:
        out |= {neg(*o) for o in list(out)}
    return out


@pytest.mark.parametrize("name", list(ORACLE))
@pytest.mark.parametrize("aug_name", ["reversal", "negation", "combined30"])
def test_augmented_examples_are_valid_and_correctly_labelled(name, aug_name):
    task = ModularTask(name, P)
    aug = get_augmentation(AUGMENTATIONS[aug_name], task)
    gen = torch.Generator().manual_seed(0)
    ops = task.operands[torch.randint(0, len(task), (4000,), generator=gen)]
    new = augment(task, ops, aug, gen)
    labels = task.label(new)
    changed = 0
    for (a, b), (x, y), c in zip(ops.tolist(), new.tolist(), labels.tolist(), strict=True):
        assert name != "x_div_y" or y != 0
        assert c == ORACLE[name](x, y)
        assert (x, y) in python_images(name, a, b, aug)
        changed += (x, y) != (a, b)
    assert changed > 0


def test_reversal_rate_and_zero_divisor_kept():
    task = ModularTask("x_div_y", P)
    aug = AUGMENTATIONS["reversal"]
    zero_dividend = torch.tensor([[0, 3]]).repeat(1000, 1)
    out = augment(task, zero_dividend, aug, torch.Generator().manual_seed(1))
    assert torch.equal(out, zero_dividend)  # (3, 0) would be invalid: originals kept
    plus = ModularTask("x_plus_y", 97)
    ops = torch.tensor([[1, 2]]).repeat(20000, 1)
    swapped = (augment(plus, ops, aug, torch.Generator().manual_seed(2))[:, 0] == 2).float()
    assert abs(swapped.mean().item() - 0.3) < 0.015


def test_permutation_augmentation_labels():
    task = PermutationTask(5)
    aug = AUGMENTATIONS["combined30"]
    perms = list(itertools.permutations(range(5)))
    ops = task.operands[torch.randint(0, len(task), (500,))]
    new = augment(task, ops, aug, torch.Generator().manual_seed(3))
    for (x, y), c in zip(new.tolist(), task.label(new).tolist(), strict=True):
        assert perms[c] == tuple(perms[x][perms[y][i]] for i in range(5))


@pytest.mark.parametrize("name", list(ORACLE))
@pytest.mark.parametrize("aug_name", list(AUGMENTATIONS))
def test_val_reachable_matches_brute_force(name, aug_name):
    task = ModularTask(name, P)
    aug = AUGMENTATIONS[aug_name]
    sp = split(len(task), 0.5, seed=7)
    pairs = [tuple(r) for r in task.operands.tolist()]
    train = {pairs[i] for i in sp.train.tolist()}
    val = [pairs[i] for i in sp.val.tolist()]
    if aug.active:
        seen = set().union(*(python_images(name, a, b, aug) for a, b in train))
        expected = sum(v in seen for v in val) / len(val)
    else:
        expected = 0.0
    assert val_reachable(task, sp.train, sp.val, aug) == pytest.approx(expected, abs=1e-9)


def test_combined30_leaks_most_of_x_plus_y_validation():
    task = ModularTask("x_plus_y", 97)
    sp = split(len(task), 0.5, seed=0)
    frac = val_reachable(task, sp.train, sp.val, AUGMENTATIONS["combined30"])
    assert 0.85 < frac < 0.89  # 1 - 0.5**3 for pairs with three distinct images
    mask = reachable(task, sp.train, AUGMENTATIONS["baseline"])
    assert mask[sp.train].all() and not mask[sp.val].any()


def test_unknown_or_undefined_augmentation_is_refused():
    with pytest.raises(ConfigError, match="'flip' is not in `augmentations`.*baseline, reversal"):
        augmentation(PARAMS, "flip")
    with pytest.raises(ConfigError, match="parity"):
        get_augmentation(AUGMENTATIONS["negation"], ParityTask(3, 2, 100))

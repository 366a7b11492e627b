"""Curriculum pools against plain-Python difficulty scores and hand-computed pacing."""

import itertools
import math
import random
from fractions import Fraction

import pytest
import torch
from registry import CURRICULA

from groklab import rng
from groklab.config import PACING_KEYS, ConfigError, CurriculumConfig, RunConfig
from groklab.curriculum import PoolSampler, difficulty, pacing
from groklab.tasks import ModularTask, ParityTask, PermutationTask, split
from groklab.train import train

P = 23  # x_plus_y over Z_23: 529 equations, 264 in a half split
STEPS = 100


# --- plain-Python oracles ----------------------------------------------------------------


def perm_inversions(perm: tuple[int, ...]) -> int:
    return sum(1 for i, j in itertools.combinations(range(len(perm)), 2) if perm[i] > perm[j])


def compose(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """a ∘ b: i -> a[b[i]]."""
    return tuple(a[b[i]] for i in range(len(a)))


def py_difficulties(task, idx: list[int]) -> list[int]:
    """Difficulty of each equation index, computed from the operands in plain Python."""
    ops = task.operands.tolist()
    if isinstance(task, PermutationTask):
        perms = list(itertools.permutations(range(5)))
        return [perm_inversions(compose(perms[ops[i][0]], perms[ops[i][1]])) for i in idx]
    return [max(ops[i]) for i in idx]


def easy_cut(diffs: list[int], delta) -> tuple[int, int]:
    """(pool size, cut value): every example at most as hard as the ceil(delta N)-th easiest."""
    k = max(1, min(len(diffs), math.ceil(Fraction(delta) * len(diffs))))
    cut = sorted(diffs)[k - 1]
    return sum(1 for d in diffs if d <= cut), cut


def hard_cut(diffs: list[int], delta) -> tuple[int, int]:
    """(pool size, cut value) from the hard end: every example at least as hard as the k-th."""
    k = max(1, min(len(diffs), math.ceil(Fraction(delta) * len(diffs))))
    cut = sorted(diffs, reverse=True)[k - 1]
    return sum(1 for d in diffs if d >= cut), cut


# The six schedules of the curriculum paper and our ablations, as pacing and order.
SCHEDULES = {"none": ("none", None), "linear": ("linear", "easiest_first"),
             "sqrt": ("sqrt", "easiest_first"), "step": ("step", "easiest_first"),
             "random": ("linear", "random"), "anti": ("linear", "hardest_first")}


def schedule(name: str, **kw) -> CurriculumConfig:
    """The named schedule with the settings its pacing reads (defaults as in params.yaml)."""
    pace, order = SCHEDULES[name]
    defaults = {"order": order, "start": 0.2, "ramp": 0.5, "step_size": 0.2,
                "step_threshold": 0.99}
    return CurriculumConfig(name=name, pacing=pace,
                            **{k: kw.get(k, defaults[k]) for k in PACING_KEYS[pace]})


def test_params_yaml_schedules_are_the_papers():
    for name, (pace, order) in SCHEDULES.items():
        assert (CURRICULA[name].pacing, CURRICULA[name].order) == (pace, order), name
    assert CURRICULA["linear"] == schedule("linear")


def make_sampler(name: str, task, seeds: list[int], steps: int = STEPS, **kw) -> PoolSampler:
    cfg = schedule(name, **kw)
    train_idx = torch.stack([split(len(task), 0.5, s).train for s in seeds])
    gens = [rng.generator(s, "data") for s in seeds]
    return PoolSampler(cfg, task, train_idx, seeds, steps, gens)


def train_list(task, seed: int) -> list[int]:
    return split(len(task), 0.5, seed).train.tolist()


@pytest.fixture(scope="module")
def task():
    return ModularTask("x_plus_y", P)


# --- difficulty ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["x_plus_y", "x_minus_y", "x_div_y"])
def test_modular_difficulty_is_max_operand(name):
    p = 7
    t = ModularTask(name, p)
    got = difficulty(t, t.operands)
    assert got.dtype.is_floating_point
    expected = [float(max(a, b)) for a, b in t.operands.tolist()]
    assert got.tolist() == expected
    # every pair of the table, checked against Python's max
    pairs = [(a, b) for a in range(p) for b in range(p) if name != "x_div_y" or b]
    assert sorted(map(tuple, t.operands.tolist())) == pairs


def test_multi_add_difficulty_is_largest_operand():
    t = ModularTask("multi_add", 4, k=3)
    expected = [float(max(row)) for row in itertools.product(range(4), repeat=3)]
    assert sorted(t.operands.tolist()) == [list(r) for r in itertools.product(range(4), repeat=3)]
    got = dict(zip(map(tuple, t.operands.tolist()), difficulty(t, t.operands).tolist(),
                   strict=True))
    assert [got[r] for r in itertools.product(range(4), repeat=3)] == expected


def test_permutation_difficulty_is_inversions_of_composition():
    t = PermutationTask(5)
    perms = list(itertools.permutations(range(5)))  # lexicographic order = element index
    m = len(perms)
    pick = random.Random(0)
    pairs = [(pick.randrange(m), pick.randrange(m)) for _ in range(400)]
    identity, reverse = 0, m - 1  # (0,1,2,3,4) and (4,3,2,1,0)
    pairs += [(identity, identity), (identity, reverse), (reverse, identity), (reverse, reverse)]
    got = difficulty(t, torch.tensor(pairs)).tolist()
    expected = [float(perm_inversions(compose(perms[a], perms[b]))) for a, b in pairs]
    assert got == expected
    # hand values: e∘e = e (0 inversions), e∘r = r∘e = r (10), r∘r = e (0)
    assert got[-4:] == [0.0, 10.0, 10.0, 0.0]


def test_permutation_difficulty_is_not_symmetric_in_operands():
    # a∘b and b∘a differ here, so composing the wrong way round would give other scores
    t = PermutationTask(5)
    perms = list(itertools.permutations(range(5)))
    a, b = perms.index((1, 0, 2, 3, 4)), perms.index((4, 0, 1, 2, 3))
    # a∘b = (4, 1, 0, 2, 3): 5 inversions; b∘a = (0, 4, 1, 2, 3): 3 inversions
    assert compose(perms[a], perms[b]) == (4, 1, 0, 2, 3)
    assert compose(perms[b], perms[a]) == (0, 4, 1, 2, 3)
    assert difficulty(t, torch.tensor([[a, b], [b, a]])).tolist() == [5.0, 3.0]


def test_parity_difficulty_counts_informative_set_bits():
    t = ParityTask(k=3, n=4, examples=50, seeds=[1])
    expected = [float(sum(row[:3])) for row in t.operands.tolist()]
    assert difficulty(t, t.operands).tolist() == expected


# --- pacing --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linear", "random", "anti"])
def test_linear_pacing_hand_values(name):
    cfg = schedule(name, start=0.2, ramp=0.5)
    # T = 100, ramp ends at t = 50: delta = 0.2 + 0.8 * min(1, t / 50)
    for t, expected in [(0, 0.2), (10, 0.36), (25, 0.6), (50, 1.0), (80, 1.0), (100, 1.0)]:
        assert pacing(cfg, t, 100) == pytest.approx(expected, abs=1e-12), t
    cfg = schedule(name, start=0.1, ramp=1.0)
    # T = 40: delta = 0.1 + 0.9 * t / 40
    for t, expected in [(0, 0.1), (10, 0.325), (20, 0.55), (40, 1.0)]:
        assert pacing(cfg, t, 40) == pytest.approx(expected, abs=1e-12), t


def test_sqrt_pacing_hand_values():
    cfg = schedule("sqrt", start=0.2, ramp=0.5)
    # delta = sqrt(0.04 + 0.96 * min(1, t / 50))
    cases = [(0, 0.2), (25, math.sqrt(0.52)), (10, math.sqrt(0.232)), (50, 1.0), (99, 1.0)]
    for t, expected in cases:
        assert pacing(cfg, t, 100) == pytest.approx(expected, abs=1e-12), t
    cfg = schedule("sqrt", start=0.5, ramp=1.0)
    # T = 8: delta = sqrt(0.25 + 0.75 t / 8); t = 4 -> sqrt(0.625)
    assert pacing(cfg, 4, 8) == pytest.approx(math.sqrt(0.625), abs=1e-12)
    assert pacing(cfg, 8, 8) == pytest.approx(1.0, abs=1e-12)


def test_sqrt_runs_ahead_of_linear_during_ramp():
    lin = schedule("linear", start=0.2, ramp=0.5)
    sq = schedule("sqrt", start=0.2, ramp=0.5)
    for t in range(1, 50):
        assert pacing(sq, t, 100) > pacing(lin, t, 100)


@pytest.mark.parametrize("name", ["none", "step"])
def test_untimed_schedules_have_no_pacing(name):
    with pytest.raises(ValueError, match=name):
        pacing(schedule(name), 0, 100)


# --- pool sizes ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linear", "sqrt", "anti", "random"])
def test_pool_grows_to_the_whole_split(task, name):
    seed = 4
    s = make_sampler(name, task, [seed], start=0.2, ramp=0.5)
    idx = train_list(task, seed)
    n = len(idx)
    assert n == 264
    sizes = [s.pool_size(0, t) for t in range(STEPS + 1)]
    assert all(a <= b for a, b in itertools.pairwise(sizes)), sizes
    assert all(size == n for size in sizes[50:])  # ramp = 0.5 of 100 updates
    assert sizes[0] < sizes[25] < n  # it does grow, and is not yet whole mid-ramp
    diffs = py_difficulties(task, idx)
    cut = hard_cut if name == "anti" else easy_cut  # random: the linear sizes
    assert sizes[0] == cut(diffs, Fraction(1, 5))[0]
    assert 0 < sizes[0] < n


@pytest.mark.parametrize("name", ["linear", "sqrt"])
def test_permutation_pool_at_start_is_easiest_by_inversions(name):
    t = PermutationTask(5)
    seed = 2
    s = make_sampler(name, t, [seed], start=0.3, ramp=0.5)
    idx = train_list(t, seed)
    size, _ = easy_cut(py_difficulties(t, idx), Fraction(3, 10))
    assert s.pool_size(0, 0) == size


def test_linear_pool_matches_exact_oracle_along_the_ramp(task):
    seed = 4
    s = make_sampler("linear", task, [seed], start=0.2, ramp=0.5)
    diffs = py_difficulties(task, train_list(task, seed))
    for t in (0, 1, 7, 13, 33, 49):
        delta = Fraction(1, 5) + Fraction(4, 5) * Fraction(t, 50)
        assert s.pool_size(0, t) == easy_cut(diffs, delta)[0], t


def test_random_pool_sizes_follow_the_linear_pace(task):
    """`random` grows its pool at `linear`'s pace: the size the plain-Python pacing
    (exact fractions, ties at the cut kept) gives, at every step, in random order."""
    seed = 4
    rnd = make_sampler("random", task, [seed], start=0.2, ramp=0.5)
    diffs = py_difficulties(task, train_list(task, seed))
    for t in range(STEPS + 1):
        delta = Fraction(1, 5) + Fraction(4, 5) * min(Fraction(t, 50), Fraction(1))
        assert rnd.pool_size(0, t) == easy_cut(diffs, delta)[0], t


# --- which examples are sampled ------------------------------------------------------------


def drawn(sampler: PoolSampler, step: int, draws: int = 20, batch: int = 256) -> list[list[int]]:
    """Every index member s drew over ``draws`` batches at ``step``, per member."""
    out = [[] for _ in range(sampler.members)]
    for _ in range(draws):
        batch_idx = sampler.sample(step, batch)
        assert batch_idx.shape == (sampler.members, batch)
        assert batch_idx.dtype == torch.int64
        for m, row in enumerate(batch_idx.tolist()):
            out[m] += row
    return out


def test_linear_samples_only_the_easiest_examples(task):
    seed = 4
    s = make_sampler("linear", task, [seed], start=0.2, ramp=0.5)
    idx = train_list(task, seed)
    diffs = py_difficulties(task, idx)
    diff_of = dict(zip(idx, diffs, strict=True))
    for t, delta in [(0, Fraction(1, 5)), (20, Fraction(1, 5) + Fraction(4, 5) * Fraction(2, 5))]:
        size, cut = easy_cut(diffs, delta)
        got = drawn(s, t)[0]
        assert set(got) <= set(idx)  # training split only
        assert max(diff_of[i] for i in got) <= cut
        # the pool is exactly the examples at most as hard as the cut (ties included)
        assert set(got) == {i for i in idx if diff_of[i] <= cut}
        assert len(set(got)) == size


def test_anti_samples_only_the_hardest_examples(task):
    seed = 4
    s = make_sampler("anti", task, [seed], start=0.2, ramp=0.5)
    idx = train_list(task, seed)
    diffs = py_difficulties(task, idx)
    diff_of = dict(zip(idx, diffs, strict=True))
    size, cut = hard_cut(diffs, Fraction(1, 5))
    assert cut > 0
    got = drawn(s, 0)[0]
    assert set(got) <= set(idx)
    assert min(diff_of[i] for i in got) >= cut
    assert set(got) == {i for i in idx if diff_of[i] >= cut}
    assert len(set(got)) == size


def test_random_ignores_difficulty(task):
    seed = 4
    lin = make_sampler("linear", task, [seed], start=0.2, ramp=0.5)
    rnd = make_sampler("random", task, [seed], start=0.2, ramp=0.5)
    idx = train_list(task, seed)
    diffs = py_difficulties(task, idx)
    diff_of = dict(zip(idx, diffs, strict=True))
    _, cut = easy_cut(diffs, Fraction(1, 5))
    got = drawn(rnd, 0)[0]
    assert set(got) <= set(idx)
    assert max(diff_of[i] for i in got) > cut  # harder than anything linear may draw
    assert len(set(got)) == rnd.pool_size(0, 0) == lin.pool_size(0, 0)
    assert set(got) != set(drawn(lin, 0)[0])


def test_step_schedule_grows_only_on_fitting_the_pool(task):
    seed = 4
    s = make_sampler("step", task, [seed], start=0.2, step_size=0.3, step_threshold=0.9)
    idx = train_list(task, seed)
    diffs = py_difficulties(task, idx)
    diff_of = dict(zip(idx, diffs, strict=True))
    n = len(idx)

    def size_at(delta):
        return easy_cut(diffs, delta)[0]

    start = size_at(Fraction(1, 5))
    assert 0 < start < n
    assert s.pool_size(0, 0) == start
    assert s.pool_size(0, 10**6) == start  # time alone does not grow it
    s.observe([0.0])
    s.observe([0.8999])
    assert s.pool_size(0, 0) == start  # below the threshold: no growth
    _, cut = easy_cut(diffs, Fraction(1, 5))
    assert max(diff_of[i] for i in drawn(s, 0, draws=5)[0]) <= cut
    s.observe([0.9])  # exactly the threshold counts
    assert s.pool_size(0, 0) == size_at(Fraction(1, 2)) > start
    s.observe([0.5])
    assert s.pool_size(0, 0) == size_at(Fraction(1, 2))
    s.observe([1.0])
    assert s.pool_size(0, 0) == size_at(Fraction(4, 5))
    s.observe([0.95])  # 0.8 + 0.3 is capped at the whole split
    assert s.pool_size(0, 0) == n
    s.observe([1.0])
    assert s.pool_size(0, 0) == n
    assert set(drawn(s, 0, draws=40)[0]) == set(idx)


def test_step_schedule_advances_each_member_on_its_own_accuracy(task):
    seeds = [4, 9]
    s = make_sampler("step", task, seeds, start=0.2, step_size=0.3, step_threshold=0.9)
    sizes = [easy_cut(py_difficulties(task, train_list(task, sd)), Fraction(1, 5))[0]
             for sd in seeds]
    grown = easy_cut(py_difficulties(task, train_list(task, 4)), Fraction(1, 2))[0]
    assert [s.pool_size(0, 0), s.pool_size(1, 0)] == sizes
    s.observe([0.95, 0.5])
    assert [s.pool_size(0, 0), s.pool_size(1, 0)] == [grown, sizes[1]]


@pytest.mark.parametrize("name", ["linear", "sqrt", "random", "anti", "none"])
def test_observe_does_not_move_timed_pools(task, name):
    s = make_sampler(name, task, [4], start=0.2, ramp=0.5)
    before = [s.pool_size(0, t) for t in (0, 10, 30, 60)]
    s.observe([1.0])
    assert [s.pool_size(0, t) for t in (0, 10, 30, 60)] == before


def test_none_samples_the_whole_training_split(task):
    seed = 4
    s = make_sampler("none", task, [seed])
    idx = train_list(task, seed)
    n = len(idx)
    assert s.pool_size(0, 0) == n
    got = drawn(s, 0, draws=10) + drawn(s, STEPS - 1, draws=10)
    hits = set(got[0]) | set(got[1])
    assert hits <= set(idx)
    # 5120 uniform draws from 264: each is missed with probability (1 - 1/264)^5120 ~ 4e-9
    assert len(hits) >= 0.95 * n
    full = s.sample(0, None)
    assert full.tolist() == [idx]  # full batch: the whole split


# --- ensembles ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["none", "linear", "sqrt", "step", "random", "anti"])
def test_members_sample_what_they_would_alone(task, name):
    seeds = [3, 8]
    pair = make_sampler(name, task, seeds, start=0.2, ramp=0.5, step_threshold=0.9)
    alone = [make_sampler(name, task, [sd], start=0.2, ramp=0.5, step_threshold=0.9)
             for sd in seeds]
    accs = [[0.95, 0.1], [0.2, 0.99], [0.91, 0.92]]
    for t in range(0, 60, 3):
        both = pair.sample(t, 32)
        assert both.shape == (2, 32)
        for m, one in enumerate(alone):
            assert torch.equal(both[m], one.sample(t, 32)[0]), (m, t)
        if t % 15 == 0:
            acc = accs[(t // 15) % len(accs)]
            pair.observe(acc)
            for m, one in enumerate(alone):
                one.observe([acc[m]])


def test_members_draw_from_their_own_splits(task):
    seeds = [3, 8]
    pair = make_sampler("linear", task, seeds, start=0.2, ramp=0.5)
    got = drawn(pair, 60, draws=10)
    for m, sd in enumerate(seeds):
        assert set(got[m]) <= set(train_list(task, sd))
    assert set(got[0]) != set(got[1])


# --- full batch ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linear", "sqrt", "step", "random", "anti"])
def test_curriculum_with_full_batch_is_an_error(task, name):
    s = make_sampler(name, task, [4])
    with pytest.raises(ValueError, match="batch_size"):
        s.sample(0, None)


def test_train_rejects_curriculum_with_full_batch():
    cfg = RunConfig().replace(data={"p": 11}, train={"batch_size": None, "steps": 2,
                                                     "curriculum": CURRICULA["linear"]})
    with pytest.raises(ConfigError, match="batch_size"):
        train(cfg, [0])


# --- rounding of delta * N ---------------------------------------------------------------

# x_plus_y at p = 11, seed 2: N = 60 training examples, and exactly 36 = 0.6 N of them have
# max operand <= the 36th easiest's, so the 60% pool holds 36 examples (no ties at the cut).
# In floats 0.2 + 0.8 * 0.5 and 0.2 + 0.2 + 0.2 are both 0.6000000000000001, and
# ceil(0.6000000000000001 * 60) = 37 would pull in the whole next difficulty tier.
def test_linear_pool_at_mid_ramp_is_the_exact_fraction():
    p, seed = 11, 2
    t = ModularTask("x_plus_y", p)
    diffs = py_difficulties(t, train_list(t, seed))
    assert len(diffs) == 60
    assert easy_cut(diffs, Fraction(3, 5)) == (36, sorted(diffs)[35])
    s = make_sampler("linear", t, [seed], steps=100, start=0.2, ramp=0.5)
    # update 25 of 100 with ramp 0.5: delta = 0.2 + 0.8 * 25 / 50 = 0.6 exactly
    assert s.pool_size(0, 25) == 36


def test_step_pool_after_two_advances_is_the_exact_fraction():
    p, seed = 11, 2
    t = ModularTask("x_plus_y", p)
    diffs = py_difficulties(t, train_list(t, seed))
    s = make_sampler("step", t, [seed], start=0.2, step_size=0.2, step_threshold=0.9)
    s.observe([1.0])
    assert s.pool_size(0, 0) == easy_cut(diffs, Fraction(2, 5))[0]
    s.observe([1.0])  # delta = 0.2 + 0.2 + 0.2 = 0.6
    assert s.pool_size(0, 0) == 36

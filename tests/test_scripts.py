"""The maintenance scripts' own logic: scripts/same_bytes.py (before a re-record)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from same_bytes import checkout, differing

ROOT = Path(__file__).resolve().parents[1]


def test_differing_names_changed_missing_and_extra_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        (root / "models/cell").mkdir(parents=True)
        (root / "models/cell/history.csv").write_bytes(b"step,val_acc\n0,0.1\n")
    (a / "models/cell/final.csv").write_bytes(b"x\n1\n")
    (b / "models/cell/final.csv").write_bytes(b"x\n2\n")  # same size, other bytes
    (a / "models/cell/seed0.pt").write_bytes(b"\x00")  # only in a
    (b / "models/cell/seed1.pt").write_bytes(b"\x00")  # only in b
    assert differing(a, b) == ["models/cell/seed0.pt", "models/cell/seed1.pt",
                               "models/cell/final.csv"]
    assert differing(a, a) == []


def test_checkout_gives_the_commits_code_and_params(tmp_path):
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    code = checkout(head, tmp_path / "old")
    for path in ("params.yaml", "src/groklab/train.py"):
        committed = subprocess.run(["git", "-C", str(ROOT), "show", f"{head}:{path}"],
                                   check=True, capture_output=True).stdout
        assert (code / path).read_bytes() == committed
    assert not (code / "tests").exists()  # the code and its params, nothing else


def test_aft_coverage_simulates_the_censoring_share_it_is_given():
    """benchmarks/aft_coverage.py: the budget it sets leaves the stated share of the reference
    runs censored, the cell's runs are the reference's times the ratio, and every time is at
    most the budget (counted over many draws, against the normal distribution's quantile)."""
    import math

    import numpy as np
    from aft_coverage import simulate
    from scipy import stats

    rng = np.random.default_rng(3)
    median, sd, share, n = 4000.0, 0.3, 0.25, 20000
    budget = median * math.exp(sd * stats.norm.ppf(1 - share))
    t, reached, in_a = simulate(rng, n, sd, median, 0.5, budget)
    assert in_a.sum() == n and (t <= budget).all()
    assert abs((~reached[~in_a]).mean() - share) < 0.01  # the reference: a quarter censored
    # the cell: log times shifted by log 0.5, so P(T > budget) = P(z > z_0.75 + log 2 / sd)
    expected = stats.norm.sf(stats.norm.ppf(1 - share) + math.log(2) / sd)
    assert abs((~reached[in_a]).mean() - expected) < 0.005
    assert abs(np.median(t[in_a]) / np.median(t[~in_a]) - 0.5) < 0.02

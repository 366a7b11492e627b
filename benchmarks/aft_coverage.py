"""Coverage of the time ratio's 95% interval, and the rate of false verdicts, when seeds are
censored at the budget (groklab.survival.time_ratio; groklab.summary.decide).

    python benchmarks/aft_coverage.py --sims 1000

Simulates comparisons of ``--seeds`` vs ``--seeds`` runs whose log steps to 99% are normal
(sd ``--sd``; the reference's median ``--median``, the cell's ``--ratio`` times it), each
censored at a budget set so that a fraction ``--censored`` of the reference's runs never get
there (as a cell that did not grok within 7,500 updates). Prints, per censoring level, how
often the interval is defined, how often it covers the true ratio when it is, and how often
the decision (the test that decides: log-rank where it can reach 0.05, else this interval)
says "faster" or "slower" — at ``--ratio 1`` that is the false-verdict rate, to be near
0.05. One JSON line at the end holds every figure.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
from scipy import stats

from groklab.metrics import logrank
from groklab.summary import decide
from groklab.survival import time_ratio


def simulate(rng: np.random.Generator, n: int, sd: float, median: float, ratio: float,
             budget: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    in_a = np.arange(2 * n) < n
    log_t = math.log(median) + rng.normal(0, sd, 2 * n) + np.where(in_a, math.log(ratio), 0)
    t = np.round(np.exp(log_t))
    reached = t <= budget
    return np.where(reached, t, budget), reached, in_a


def one_level(rng: np.random.Generator, sims: int, n: int, sd: float, median: float,
              ratio: float, censored: float) -> dict[str, float]:
    # the budget below which a fraction 1 - censored of the reference's runs reach 99%
    budget = median * math.exp(sd * stats.norm.ppf(1 - censored)) if censored > 0 else 1e12
    defined = covered = verdicts = had_censoring = 0
    for _ in range(sims):
        t, e, a = simulate(rng, n, sd, median, ratio, budget)
        had_censoring += not e.all()
        r = time_ratio(t, e, a)
        test = logrank(t[a], e[a], t[~a], e[~a], same_budget=True)
        verdicts += decide(test.p, test.p_floor, test.method, r)["p_value"] < 0.05
        if r.ok:
            defined += 1
            covered += r.ci_low <= ratio <= r.ci_high
    return {"censored_target": censored, "budget": round(budget, 1),
            "runs_with_a_censored_seed": had_censoring / sims, "defined": defined / sims,
            "coverage_when_defined": covered / defined if defined else float("nan"),
            "verdict_rate": verdicts / sims}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per sample")
    parser.add_argument("--sd", type=float, default=0.3, help="sd of log steps to 99%%")
    parser.add_argument("--median", type=float, default=4000.0)
    parser.add_argument("--ratio", type=float, default=1.0, help="true time ratio")
    parser.add_argument("--censored", type=float, nargs="*", default=[0.0, 0.1, 0.25, 0.4])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    rows = []
    print(f"{args.seeds} vs {args.seeds} seeds, sd {args.sd} on log steps, true ratio "
          f"{args.ratio}, {args.sims} simulated comparisons per level")
    for level in args.censored:
        row = one_level(rng, args.sims, args.seeds, args.sd, args.median, args.ratio, level)
        rows.append(row)
        se = math.sqrt(0.95 * 0.05 / max(row["defined"] * args.sims, 1))
        print(f"censored {level:4.0%} of reference runs: interval defined "
              f"{row['defined']:6.1%}, covers {row['coverage_when_defined']:6.1%} "
              f"(± {1.96 * se:.1%} from simulation), verdict rate {row['verdict_rate']:6.1%}")
    print(json.dumps({"seeds": args.seeds, "sd": args.sd, "ratio": args.ratio,
                      "sims": args.sims, "levels": rows}))


if __name__ == "__main__":
    main()

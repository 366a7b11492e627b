"""Steps to 99% of the fast batched path against the straightforward one-seed-at-a-time path.

The fast path trains all seeds as one batched model with the shortcuts of
:mod:`groklab.models.transformer`; the straightforward path trains each seed alone with
the reference-style :class:`~groklab.models.reference.ReferenceTransformer` (logits at
every position, ``nn.MultiheadAttention``, PyTorch's default initialisation). Both use
the same data, splits, batches and optimiser. Initial weights differ, so the comparison
is statistical: the question is whether the two agree within seed noise.

    .venv/bin/python benchmarks/steps_to_99.py --tasks x_plus_y x_div_y --seeds 0 1 2

Prints a table and, as its last line, a JSON object with the per-seed steps of both.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from scipy import stats
from torch import Tensor, nn

from groklab.config import RunConfig
from groklab.models.reference import ReferenceTransformer
from groklab.summary import seed_summaries
from groklab.tasks import build_task
from groklab.train import train


class OneReference(nn.Module):
    """A ReferenceTransformer behind the (1, B, T) -> (1, B, C) interface of the loop."""

    def __init__(self, cfg: RunConfig, seed: int):
        super().__init__()
        task = build_task(cfg.data)
        torch.manual_seed(seed)
        self.model = ReferenceTransformer(task.vocab_size, task.seq_len, task.n_classes,
                                          layers=cfg.model.layers, width=cfg.model.width,
                                          heads=cfg.model.heads)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.model(tokens[0]).unsqueeze(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["x_plus_y", "x_minus_y", "x_div_y"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=7500)
    parser.add_argument("--stop-after-grok", type=int, default=100,
                        help="updates to continue after 99%% (steps to 99%% are unaffected)")
    args = parser.parse_args()

    out: dict[str, dict[str, list[int]]] = {}
    print(f"{'task':12} {'path':16} steps to 99% per seed          mean   wall")
    for task in args.tasks:
        cfg = RunConfig().replace(data={"task": task}, train={
            "steps": args.steps, "stop_after_grok": args.stop_after_grok})
        t0 = time.perf_counter()
        fast = [s["steps_to_99"] for s in seed_summaries(train(cfg, args.seeds))]
        t_fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        plain = []
        for seed in args.seeds:
            result = train(cfg, [seed], model_factory=lambda c, s=seed: OneReference(c, s))
            plain.append(seed_summaries(result)[0]["steps_to_99"])
        t_plain = time.perf_counter() - t0
        out[task] = {"batched_fast": fast, "one_seed_reference": plain}
        for name, steps, wall in (("batched fast", fast, t_fast),
                                  ("one-seed plain", plain, t_plain)):
            print(f"{task:12} {name:16} {str(steps):30} {sum(steps) / len(steps):6.0f} "
                  f"{wall:6.0f}s")
        if len(args.seeds) > 1:
            p = float(stats.ttest_ind(fast, plain, equal_var=False).pvalue)
            if math.isnan(p):  # no spread, e.g. every seed censored at the budget
                out[task]["welch_p"] = None
                print(f"{task:12} Welch t-test undefined: both paths have no spread")
            else:
                out[task]["welch_p"] = round(p, 3)
                print(f"{task:12} Welch t-test of the means: p = {p:.2f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()

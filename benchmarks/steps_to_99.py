"""Steps to 99% of the fast batched path against the straightforward one-seed-at-a-time path.

The fast path trains all seeds as one batched model with the shortcuts of
:mod:`groklab.models.transformer`; the straightforward path trains each seed alone with
the reference-style :class:`~groklab.models.reference.ReferenceTransformer` (logits at
every position, ``nn.MultiheadAttention``, PyTorch's default initialisation). Both use
the same data, splits, batches and optimiser. Initial weights differ, so the comparison
is statistical: the question is whether the two agree within seed noise.

    .venv/bin/python benchmarks/steps_to_99.py --tasks x_plus_y x_div_y --seeds 0 1 2

On a GPU the fast path trains as CUDA graphs. ``--fast-only --against TASK=S1,S2,S3`` compares
it instead with steps measured elsewhere (the CPU figures in README), with one PASS/FAIL
line per task: PASS when every seed reached 99% and a Welch t-test does not separate the
two (p > 0.01). Prints a table and, as its last line, a JSON object with the per-seed steps.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from scipy import stats
from torch import Tensor, nn

from groklab.config import MATMUL_PRECISIONS, RunConfig
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
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--matmul-precision", choices=MATMUL_PRECISIONS, default="highest",
                        help="train.matmul_precision (GPU float32 matmuls)")
    parser.add_argument("--fast-only", action="store_true",
                        help="skip the one-seed straightforward path")
    parser.add_argument("--against", nargs="*", default=[], metavar="TASK=S1,S2,S3",
                        help="steps to 99%% of the same task measured elsewhere, to compare with")
    args = parser.parse_args()
    against = {}
    for item in args.against:
        task, _, steps = item.partition("=")
        against[task] = [int(s) for s in steps.split(",")]

    out: dict[str, dict[str, list[int]]] = {}
    print(f"{'task':12} {'path':16} steps to 99% per seed          mean   wall")
    for task in args.tasks:
        cfg = RunConfig().replace(data={"task": task}, train={
            "steps": args.steps, "stop_after_grok": args.stop_after_grok,
            "device": args.device, "matmul_precision": args.matmul_precision})
        t0 = time.perf_counter()
        fast_runs = seed_summaries(train(cfg, args.seeds))
        fast = [s["steps_to_99"] for s in fast_runs]
        t_fast = time.perf_counter() - t0
        if args.fast_only:
            out[task] = {"batched_fast": fast, "wall_s": round(t_fast, 1)}
            print(f"{task:12} {'batched fast':16} {str(fast):30} {sum(fast) / len(fast):6.0f} "
                  f"{t_fast:6.0f}s")
            if task in against:
                out[task].update(compare(task, fast_runs, against[task]))
            continue
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


def compare(task: str, runs: list[dict], other: list[int]) -> dict:
    """One PASS/FAIL line: every seed grokked and the means are not separated (p > 0.01)."""
    steps = [s["steps_to_99"] for s in runs]
    grokked = all(s["grokked"] for s in runs)
    p = float(stats.ttest_ind(steps, other, equal_var=False).pvalue)
    ok = grokked and (math.isnan(p) or p > 0.01)
    print(f"steps_to_99 {task}: {'PASS' if ok else 'FAIL'} here {steps} "
          f"(mean {sum(steps) / len(steps):.0f}) vs {other} (mean {sum(other) / len(other):.0f}),"
          f" Welch p = {p:.3f}{'' if grokked else ', not every seed reached 99%'}")
    return {"against": other, "welch_p": None if math.isnan(p) else round(p, 3), "pass": ok}


if __name__ == "__main__":
    main()

"""What the Fourier progress measures cost: the same run with and without them.

Trains one cell of x_plus_y (the base configuration unless overridden) twice, with
``train.measures_every = 0`` and ``= N``, alternating, and prints the seconds of each and
the relative overhead. It also times the two parts directly, which noise on a shared
machine hides less: one update (forward, backward, optimiser step on a batch) and one
measurement (forward over the whole p² grid, projections, spectrum, weight norm), and
gives the measurement's cost per update at that cadence (``measure / (N · eval_every ·
update)``; the target is <= 10%).

Its last line is a JSON object. At the base configuration:
``.venv/bin/python benchmarks/measures_cost.py``; a quick look:
``.venv/bin/python benchmarks/measures_cost.py --p 23 --width 32 --steps 60 --repeats 1``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from groklab.config import RunConfig
from groklab.fourier import progress_measures
from groklab.models import build_model
from groklab.optim import build_optimizer
from groklab.tasks import build_task
from groklab.train import train


def config(args: argparse.Namespace, measures_every: int) -> RunConfig:
    return RunConfig().replace(
        data={"task": "x_plus_y", "p": args.p},
        model={"width": args.width},
        train={"steps": args.steps, "eval_every": args.eval_every, "device": "cpu",
               "batch_size": args.batch_size, "measures_every": measures_every})


def time_parts(cfg: RunConfig, seeds: list[int], repeats: int) -> tuple[float, float]:
    """Median seconds of one update and of one measurement, on the same model."""
    task = build_task(cfg.data, seeds)
    model = build_model(cfg.model, task, seeds)
    opt = build_optimizer(cfg.optim, model.parameters())
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(len(task), (len(seeds), cfg.train.batch_size), generator=g)
    tokens, labels = task.tokens[idx], task.labels[idx]
    train_mask = torch.zeros(len(seeds), len(task), dtype=torch.bool)
    train_mask[:, ::2] = True

    def update() -> None:
        loss = F.cross_entropy(model(tokens).transpose(1, 2), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def measure() -> None:
        progress_measures(model, task.tokens, task.labels, train_mask, cfg.data.p)

    out = []
    for fn, n in ((update, 10), (measure, 1)):
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            times.append((time.perf_counter() - t0) / n)
        out.append(statistics.median(times))
    return out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--p", type=int, default=97, help="modulus (base: 97)")
    parser.add_argument("--width", type=int, default=128, help="model width (base: 128)")
    parser.add_argument("--batch-size", type=int, default=512, help="batch (base: 512)")
    parser.add_argument("--eval-every", type=int, default=10, help="updates per evaluation")
    parser.add_argument("--measures-every", type=int, default=10,
                        help="evaluations per measurement (params.yaml: train.measures_every)")
    parser.add_argument("--steps", type=int, default=200, help="updates per timed run")
    parser.add_argument("--seeds", type=int, default=1, help="seeds trained side by side")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each kind")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads (default: torch's, one per core)")
    args = parser.parse_args()
    if args.threads:  # on a busy machine, 1 keeps OpenMP threads from spinning on each other
        torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds))

    runs: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(args.repeats):  # alternate, so drifting load hits both alike
        for name, every in (("without", 0), ("with", args.measures_every)):
            t0 = time.perf_counter()
            train(config(args, every), seeds, engine="loop")
            runs[name].append(time.perf_counter() - t0)
    without, with_ = (statistics.median(runs[k]) for k in ("without", "with"))
    update_s, measure_s = time_parts(config(args, args.measures_every), seeds, args.repeats)
    per_update = measure_s / (args.measures_every * args.eval_every * update_s)
    print(f"run of {args.steps} updates (p={args.p}, width {args.width}, batch "
          f"{args.batch_size}, {args.seeds} seed(s)), median of {args.repeats}: without "
          f"measures {without:.2f} s, with (every {args.measures_every} evaluations) "
          f"{with_:.2f} s: {100 * (with_ / without - 1):+.1f}%")
    print(f"one update {1000 * update_s:.1f} ms, one measurement {1000 * measure_s:.1f} ms: "
          f"{100 * per_update:.1f}% of an update at that cadence (target <= 10%)")
    print(json.dumps({"p": args.p, "width": args.width, "steps": args.steps,
                      "threads": torch.get_num_threads(),
                      "measures_every": args.measures_every, "eval_every": args.eval_every,
                      "run_without_s": without, "run_with_s": with_,
                      "run_overhead": with_ / without - 1, "update_s": update_s,
                      "measure_s": measure_s, "measure_per_update": per_update}))


if __name__ == "__main__":
    main()

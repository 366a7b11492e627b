"""Where a GPU update's time goes: its kernels, and what each speed choice is worth.

For the base configuration (x_plus_y, p=97, 2-layer width-128 Transformer, batch 512,
evaluation every 10 updates):

* the kernels of ``--profile-updates`` eager updates and their evaluations, run through the
  graphed loop's own step code under ``torch.profiler``, at each number of batched seeds in
  ``--profile-seeds``: kernels per update and the busiest kernels by total GPU time (as a
  captured graph replays them, without the launch gaps), then the kernels whose time grows
  most from the fewest seeds to the most (what makes extra seeds cost);
* ms per update of the captured graphs for each ``train.matmul_precision`` in
  ``--precisions``, at each number of batched seeds in ``--seeds``.

The last line is a JSON object of these figures. Run on a machine with a GPU:
``PYTHONPATH=src python benchmarks/gpu_profile.py``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from groklab.augment import get_augmentation
from groklab.config import MATMUL_PRECISIONS, RunConfig
from groklab.graphed import GraphedLoop
from groklab.models import build_model
from groklab.tasks import build_task
from groklab.train import TrainData, float32_matmuls


def loop_for(cfg: RunConfig, seeds: list[int], capture: bool) -> GraphedLoop:
    """The graphed loop of ``cfg`` on the GPU, exactly as ``train`` builds it."""
    device = torch.device("cuda")
    task = build_task(cfg.data, seeds)
    aug = get_augmentation(cfg.train.aug, task)
    data = TrainData(task, cfg, seeds, device, aug)
    model = build_model(cfg.model, task, seeds).to(device)
    return GraphedLoop(cfg, seeds, task, aug, data, model, capture=capture)


def kernel_times(cfg: RunConfig, seeds: list[int], updates: int) -> dict[str, list[float]]:
    """Each CUDA kernel's durations (us) over ``updates`` eager updates and their
    evaluations, by kernel name."""
    loop = loop_for(cfg, seeds, capture=False)
    every = cfg.train.eval_every
    for _ in range(every):  # warm caches and lazily loaded kernels
        loop.update_step()
    loop.eval_step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i in range(updates):
            loop.update_step()
            if (i + 1) % every == 0:
                loop.eval_step()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    if not kernels:
        raise RuntimeError("torch.profiler recorded no CUDA kernels (is CUPTI available?)")
    by_name: dict[str, list[float]] = {}
    for e in kernels:
        by_name.setdefault(e.name, []).append(e.time_range.elapsed_us())
    return by_name


def summarise(times: dict[str, list[float]], updates: int, top: int) -> dict[str, Any]:
    """Print kernels per update and the ``top`` kernels by GPU time; return the figures."""
    calls = sum(len(t) for t in times.values())
    total_us = sum(sum(t) for t in times.values())
    rows = sorted(times.items(), key=lambda kv: -sum(kv[1]))[:top]
    print(f"{calls / updates:.0f} kernels per update (evaluation amortised), "
          f"{total_us / updates:.1f} us of kernel time per update")
    print(f"{'share':>6} {'us/update':>9} {'calls/update':>12}  kernel")
    for name, t in rows:
        print(f"{sum(t) / total_us:6.1%} {sum(t) / updates:9.1f} "
              f"{len(t) / updates:12.1f}  {name[:110]}")
    return {"kernels_per_update": round(calls / updates, 1),
            "kernel_us_per_update": round(total_us / updates, 1),
            "top": [[name[:80], round(sum(t) / updates, 1)] for name, t in rows[:10]]}


def kernel_table(cfg: RunConfig, seeds: list[int], updates: int, top: int) -> dict[str, Any]:
    """:func:`kernel_times` of ``seeds``, printed and summarised by :func:`summarise`."""
    return summarise(kernel_times(cfg, seeds, updates), updates, top)


def growth(few: dict[str, list[float]], many: dict[str, list[float]], updates: int,
           top: int) -> list[tuple[str, float, float]]:
    """The ``top`` kernels by how much their GPU time per update grows from ``few`` seeds'
    profile to ``many`` seeds' (both of ``updates`` updates): (name, us before, us after),
    a kernel missing from one profile counting 0 there."""
    rows = [(name, sum(few.get(name, ())) / updates, sum(many.get(name, ())) / updates)
            for name in few.keys() | many.keys()]
    rows.sort(key=lambda r: (-(r[2] - r[1]), r[0]))
    return rows[:top]


def replay_ms(cfg: RunConfig, seeds: list[int], updates: int) -> float:
    """ms per update of the captured graphs, evaluation amortised (CUDA events)."""
    loop = loop_for(cfg, seeds, capture=True)
    assert loop.graphs is not None
    update, evaluation = loop.graphs
    every = cfg.train.eval_every
    for _ in range(every):
        update.replay()
    evaluation.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for i in range(updates):
        update.replay()
        if (i + 1) % every == 0:
            evaluation.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="*", default=[3, 10],
                        help="numbers of batched seeds to time")
    parser.add_argument("--updates", type=int, default=300, help="updates per timing")
    parser.add_argument("--profile-seeds", type=int, nargs="*", default=[3, 10],
                        help="numbers of batched seeds profiled kernel by kernel")
    parser.add_argument("--profile-updates", type=int, default=50,
                        help="updates profiled kernel by kernel")
    parser.add_argument("--precisions", nargs="+", choices=MATMUL_PRECISIONS,
                        default=list(MATMUL_PRECISIONS), help="train.matmul_precision values")
    parser.add_argument("--top", type=int, default=25, help="kernels listed")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_profile: no CUDA device is visible")
    base = RunConfig().replace(train={"device": "cuda"})
    out: dict[str, Any] = {"machine": torch.cuda.get_device_name(0), "torch": torch.__version__}
    updates = args.profile_updates
    for precision in args.precisions:
        cfg = base.replace(train={"matmul_precision": precision})
        with float32_matmuls(torch.device("cuda"), precision):
            profiles = {}
            for n in args.profile_seeds:
                print(f"=== kernels, {n} seeds, matmul precision {precision}")
                profiles[n] = kernel_times(cfg, list(range(n)), updates)
                out[f"kernels_{precision}_{n}"] = summarise(profiles[n], updates, args.top)
            if len(profiles) > 1:
                few, many = min(profiles), max(profiles)
                rows = growth(profiles[few], profiles[many], updates, args.top)
                print(f"=== growth from {few} to {many} seeds, matmul precision {precision}")
                print(f"{'us/update':>9} {'->':>2} {'us/update':>9}  kernel")
                for name, before, after in rows:
                    print(f"{before:9.1f} -> {after:9.1f}  {name[:110]}")
                out[f"growth_{precision}_{few}_{many}"] = [
                    [name[:80], round(before, 1), round(after, 1)] for name, before, after
                    in rows[:10]]
            for n in args.seeds:
                ms = replay_ms(cfg, list(range(n)), args.updates)
                out[f"ms_{precision}_{n}"] = round(ms, 3)
                print(f"matmul precision {precision:7s} {n:2d} seeds: {ms:7.3f} ms/update",
                      flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

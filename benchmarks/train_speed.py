"""Milliseconds per update of the base configuration, against a reference-style loop.

Base configuration: x_plus_y, p=97, fraction 0.5, 2-layer width-128 Transformer, AdamW,
batch 512, whole-validation evaluation every 10 updates. Prints a table and, as its last
line, a JSON object with ``ms_per_update`` (median of ``--repeats`` timings) and the other
figures. Run: ``.venv/bin/python benchmarks/train_speed.py`` (``--help`` for options).

The reference style is the loop the papers' code used: per-example Python sampling,
``nn.MultiheadAttention``, logits for every position, and evaluation on 8 x 512
sampled validation examples every 10 updates.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from groklab.config import RunConfig
from groklab.models.reference import ReferenceTransformer
from groklab.tasks import build_task, split
from groklab.train import evaluate, resolve_device, train


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 20) -> float:
    """Measured float32 matmul throughput (GFLOP/s) of an n x n x n product."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_groklab(cfg: RunConfig, seeds: list[int], steps: int) -> float:
    """ms per update of ``train``, timed between its first and last evaluation."""
    stamps: dict[int, float] = {}

    def progress(p):
        _sync(resolve_device(cfg.train.device))
        stamps[p.step] = time.perf_counter()

    train(cfg.replace(train={"steps": steps}), seeds, progress=progress)
    first = min(s for s in stamps if s > 0)  # skip step 0 and the first interval (warm-up)
    last = max(stamps)
    return (stamps[last] - stamps[first]) / (last - first) * 1e3


class _ReferenceStream(torch.utils.data.IterableDataset):
    """The reference's data path: one equation at a time, in Python, as tensors."""

    def __init__(self, pairs: list[int], p: int):
        self.pairs, self.p = pairs, p

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = divmod(random.choice(self.pairs), self.p)
        return torch.tensor([a, self.p, b, self.p + 1]), torch.tensor((a + b) % self.p)


def time_reference_style(cfg: RunConfig, steps: int, device: torch.device) -> float:
    """ms per update of a loop written the way the reference implementation was.

    Per-example Python sampling through an IterableDataset and DataLoader, the
    ``nn.MultiheadAttention`` model computing logits at every position, and evaluation
    on 8 x 512 sampled validation examples every 10 updates.
    """
    task = build_task(cfg.data)
    sp = split(len(task), cfg.data.train_fraction, 0)
    bs = cfg.train.batch_size
    train_iter = iter(torch.utils.data.DataLoader(
        _ReferenceStream(sp.train.tolist(), cfg.data.p), batch_size=bs))
    val_iter = iter(torch.utils.data.DataLoader(
        _ReferenceStream(sp.val.tolist(), cfg.data.p), batch_size=bs))
    model = ReferenceTransformer(task.vocab_size, task.seq_len, task.n_classes).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=0.5)
    t0 = None
    for step in range(steps + 10):
        if step == 10:  # the first 10 updates warm caches
            _sync(device)
            t0 = time.perf_counter()
        x, y = (t.to(device) for t in next(train_iter))
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 10 == 0:
            with torch.no_grad():
                for _ in range(8):
                    xv, yv = (t.to(device) for t in next(val_iter))
                    (model(xv).argmax(-1) == yv).float().mean().item()
    _sync(device)
    return (time.perf_counter() - t0) / steps * 1e3


def update_flops(cfg: RunConfig, device: torch.device) -> tuple[float, float]:
    """FLOPs of one update as executed: (training step, amortised validation share)."""
    from groklab.augment import get_augmentation
    from groklab.models import build_model
    from groklab.train import _Data

    task = build_task(cfg.data)
    data = _Data(task, cfg, [0], device, get_augmentation(cfg.train.aug, task))
    model = build_model(cfg.model, task, [0]).to(device)
    idx = data.train_idx[:, :cfg.train.batch_size]
    with FlopCounterMode(display=False) as fc:
        loss = F.cross_entropy(model(data.tokens[idx]).transpose(1, 2), data.labels[idx])
        loss.backward()
    train_flops = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:
        evaluate(model, data.val_tokens, data.val_labels)
    return train_flops, fc.get_total_flops() / cfg.train.eval_every


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="updates per timing")
    parser.add_argument("--repeats", type=int, default=3, help="timings per figure (median)")
    parser.add_argument("--reference-steps", type=int, default=50,
                        help="updates timed for the reference-style loop (0 skips it)")
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 3, 8],
                        help="ensemble sizes to time (batched seeds)")
    parser.add_argument("--full-cell", action="store_true",
                        help="also time one full 7,500-update cell (minutes on a CPU)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    cfg = RunConfig().replace(train={"device": args.device})
    device = resolve_device(args.device)
    peak = matmul_gflops(device)
    ms = statistics.median(time_groklab(cfg, [0], args.steps) for _ in range(args.repeats))
    train_flops, eval_flops = update_flops(cfg, device)
    achieved = (train_flops + eval_flops) / (ms / 1e3) / 1e9
    out = {"device": str(device), "machine": platform.processor() or platform.machine(),
           "threads": torch.get_num_threads(), "torch": torch.__version__,
           "ms_per_update": round(ms, 2), "matmul_gflops": round(peak, 1),
           "update_gflop": round((train_flops + eval_flops) / 1e9, 3),
           "achieved_gflops": round(achieved, 1), "fraction_of_peak": round(achieved / peak, 3)}
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"float32 matmul peak:        {peak:8.1f} GFLOP/s")
    print(f"groklab ms per update:      {ms:8.2f} (median of {args.repeats} x {args.steps})")
    print(f"arithmetic per update:      {out['update_gflop']:8.3f} GFLOP "
          f"({train_flops / 1e9:.3f} train + {eval_flops / 1e9:.3f} validation share)")
    print(f"achieved:                   {achieved:8.1f} GFLOP/s = {achieved / peak:.1%} of peak")
    if args.reference_steps:
        ref = statistics.median(time_reference_style(cfg, args.reference_steps, device)
                                for _ in range(args.repeats))
        out["reference_ms_per_update"] = round(ref, 2)
        out["speedup_vs_reference"] = round(ref / ms, 2)
        print(f"reference-style ms/update:  {ref:8.2f}  -> speed-up {ref / ms:.1f}x")
    scaling = {}
    for n in args.seeds:
        t = statistics.median(time_groklab(cfg, list(range(n)), args.steps)
                              for _ in range(args.repeats))
        scaling[n] = t
        print(f"{n} batched seed(s):         {t:8.2f} ms/update = {t / ms:.2f}x one seed "
              f"({t / n:.2f} ms per seed-update)")
    out["batched_seeds_ms"] = {str(k): round(v, 2) for k, v in scaling.items()}
    out["batched_seeds_relative"] = {str(k): round(v / ms, 2) for k, v in scaling.items()}
    if args.full_cell:
        t0 = time.perf_counter()
        train(cfg, [0])
        out["full_cell_s"] = round(time.perf_counter() - t0, 1)
        print(f"one full 7,500-update cell: {out['full_cell_s']:8.1f} s")
    else:
        out["full_cell_s_estimate"] = round(ms * cfg.train.steps / 1e3, 1)
        print(f"one full cell (estimate):   {out['full_cell_s_estimate']:8.1f} s")
    print(json.dumps(out))


if __name__ == "__main__":
    main()

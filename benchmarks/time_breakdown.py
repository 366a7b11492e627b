"""Where an update's time goes, and how fast it could get without attention at all.

For the base configuration (as ``train_speed.py``) this prints:

* milliseconds per update: the training step, and the whole-validation evaluation every
  ``eval_every`` updates amortised over them;
* the profiler's self time of one update grouped by kind of operation (matmuls, the
  broadcast products and sums of attention, activations and norms, data movement,
  optimiser, autograd bookkeeping);
* an ablation bound: the same update with attention replaced by a stand-in that costs
  almost nothing (``q + v``). No model trains this way; it bounds what any faster
  attention could give;
* with ``--compile``, the update with each Transformer block under ``torch.compile``
  (gathers, prefix lookup and loss stay eager), after its compile time.

Its last line is a JSON object. Run: ``.venv/bin/python benchmarks/time_breakdown.py``.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from train_speed import time_reference_style

import groklab.models.transformer as transformer
from groklab.augment import get_augmentation
from groklab.config import RunConfig
from groklab.models import build_model
from groklab.optim import build_optimizer
from groklab.tasks import build_task
from groklab.train import TrainData, evaluate

KINDS = {  # profiler op name -> kind; anything else is "other"
    "matmul": ("aten::bmm", "aten::baddbmm", "aten::mm", "aten::addmm"),
    "attention products": ("aten::mul", "aten::sum", "aten::_softmax",
                           "aten::_softmax_backward_data", "aten::masked_fill"),
    "activation and norm": ("aten::gelu", "aten::gelu_backward", "aten::native_layer_norm",
                            "aten::native_layer_norm_backward", "aten::add", "aten::add_"),
    "data movement": ("aten::cat", "aten::copy_", "aten::embedding_dense_backward",
                      "aten::index_select", "aten::fill_", "aten::zero_"),
    "optimiser": ("aten::_fused_adamw_",),
}


def update_functions(cfg: RunConfig, compile_blocks: bool = False
                     ) -> tuple[Callable[[], None], Callable[[], None]]:
    """A training step and a whole-validation evaluation of the base configuration."""
    task = build_task(cfg.data)
    data = TrainData(task, cfg, [0], torch.device("cpu"), get_augmentation(cfg.train.aug, task))
    model = build_model(cfg.model, task, [0])
    if compile_blocks:
        for block in model.blocks:
            block.forward = torch.compile(block.forward)
    opt = build_optimizer(cfg.optim, model.parameters())
    gen = torch.Generator().manual_seed(0)
    n_train = data.train_idx.shape[1]

    def step() -> None:
        idx = data.train_idx[:, torch.randint(0, n_train, (cfg.train.batch_size,),
                                              generator=gen)]
        logits = model(data.tokens[idx])
        loss = F.cross_entropy(logits.transpose(1, 2), data.labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def validate() -> None:
        evaluate(model, data.val_tokens, data.val_labels)

    return step, validate


def ms_per_update(cfg: RunConfig, repeats: int, updates: int = 40,
                  compile_blocks: bool = False) -> tuple[float, float]:
    """(training step, amortised evaluation) in ms per update, medians of ``repeats``."""
    step, validate = update_functions(cfg, compile_blocks)
    every = cfg.train.eval_every
    for _ in range(every):
        step()
    validate()
    steps, evals = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(updates):
            step()
        steps.append((time.perf_counter() - t0) / updates * 1e3)
        t0 = time.perf_counter()
        for _ in range(updates // every):
            validate()
        evals.append((time.perf_counter() - t0) / (updates // every) / every * 1e3)
    return statistics.median(steps), statistics.median(evals)


def breakdown(cfg: RunConfig, updates: int = 30) -> dict[str, float]:
    """Profiler self time per update (ms) by kind, evaluation amortised."""
    step, validate = update_functions(cfg)
    for _ in range(5):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(updates):
            step()
            if (i + 1) % cfg.train.eval_every == 0:
                validate()
    kind_of = {name: kind for kind, names in KINDS.items() for name in names}
    totals: collections.Counter[str] = collections.Counter()
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            kind = kind_of.get(event.key, "other operations")
        else:  # autograd engine nodes, optimizer wrappers: bookkeeping around the ops
            kind = "autograd and dispatch"
        totals[kind] += event.self_cpu_time_total / updates / 1e3
    return dict(totals.most_common())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timings per figure (median)")
    parser.add_argument("--reference-steps", type=int, default=50,
                        help="updates timed for the reference-style loop (0 skips it)")
    parser.add_argument("--compile", action="store_true",
                        help="also time each block under torch.compile (needs a C++ compiler)")
    args = parser.parse_args()
    cfg = RunConfig().replace(train={"device": "cpu"})

    train_ms, eval_ms = ms_per_update(cfg, args.repeats)
    kinds = breakdown(cfg)
    attend = transformer.attend
    transformer.attend = lambda q, k, v, heads: q + v[:, :, -q.shape[2]:]
    try:
        bound_train, bound_eval = ms_per_update(cfg, args.repeats)
    finally:
        transformer.attend = attend

    out = {"train_ms": round(train_ms, 2), "eval_ms_amortised": round(eval_ms, 2),
           "ms_per_update": round(train_ms + eval_ms, 2),
           "profile_ms": {k: round(v, 2) for k, v in kinds.items()},
           "without_attention_ms_per_update": round(bound_train + bound_eval, 2)}
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"update: {train_ms:6.2f} ms training step + {eval_ms:5.2f} ms evaluation "
          f"(amortised) = {train_ms + eval_ms:6.2f} ms")
    print(f"profile of one update (self time, ms; the profiler adds overhead), "
          f"total {sum(kinds.values()):.2f}:")
    for kind, ms in kinds.items():
        print(f"  {ms:6.2f}  {kind}")
    print(f"bound with attention free: {bound_train:6.2f} + {bound_eval:5.2f} = "
          f"{bound_train + bound_eval:6.2f} ms per update")
    if args.compile:
        t0 = time.perf_counter()
        compiled_train, compiled_eval = ms_per_update(cfg, args.repeats, compile_blocks=True)
        out["compiled_ms_per_update"] = round(compiled_train + compiled_eval, 2)
        print(f"blocks compiled: {compiled_train:6.2f} + {compiled_eval:5.2f} = "
              f"{compiled_train + compiled_eval:6.2f} ms per update "
              f"({time.perf_counter() - t0:.0f} s including compilation)")
    if args.reference_steps:
        ref = statistics.median(time_reference_style(cfg, args.reference_steps,
                                                     torch.device("cpu"))
                                for _ in range(3))
        out["reference_ms_per_update"] = round(ref, 2)
        out["speedup"] = round(ref / (train_ms + eval_ms), 2)
        out["speedup_bound_without_attention"] = round(ref / (bound_train + bound_eval), 2)
        print(f"reference style: {ref:6.2f} ms per update -> speed-up "
              f"{ref / (train_ms + eval_ms):.2f}x now, at most "
              f"{ref / (bound_train + bound_eval):.2f}x with attention free")
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Same seeds twice on one device: identical histories? And captured against eager steps.

Trains the base configuration (3 seeds, ``--steps`` updates) twice with the device's
default engine and compares the history and final tables bit for bit; on a GPU it also
trains the same steps without capture (``engine="graph_eager"``) and prints how far the
two drift apart (a figure: float differences between kernels grow over training).
Prints ``determinism: PASS|FAIL ...`` and, as its last line, a JSON object.

    PYTHONPATH=src python benchmarks/determinism.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from groklab.config import MATMUL_PRECISIONS
from groklab.params import load_params, run_config
from groklab.train import resolve_device, resolve_engine, train

ROOT = Path(__file__).resolve().parents[1]


def max_difference(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Largest absolute difference between two tables' numbers (NaN equal to NaN)."""
    x, y = a.to_numpy(dtype=float), b.to_numpy(dtype=float)
    both_nan = pd.isna(x) & pd.isna(y)
    return float(abs(x - y)[~both_nan].max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--steps", type=int, default=2000, help="updates per run")
    parser.add_argument("--aug", default="combined30", help="augmentation (exercises more ops)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--matmul-precision", choices=MATMUL_PRECISIONS, default="highest",
                        help="train.matmul_precision (GPU float32 matmuls)")
    args = parser.parse_args()

    params = load_params(ROOT / "params.yaml")
    cfg = run_config(params, "x_plus_y", {"train.aug": args.aug, "train.steps": args.steps})
    cfg = cfg.replace(train={"device": args.device, "matmul_precision": args.matmul_precision})
    device = resolve_device(args.device)
    engine = resolve_engine("auto", device)
    t0 = time.perf_counter()
    first, second = train(cfg, args.seeds), train(cfg, args.seeds)
    wall = (time.perf_counter() - t0) / 2
    same = first.history.equals(second.history) and first.final.equals(second.final)
    out = {"device": str(device), "engine": engine, "steps": args.steps, "seeds": args.seeds,
           "identical": same, "run_s": round(wall, 2),
           "max_difference_twice": max_difference(first.history, second.history)}
    print(f"determinism: {'PASS' if same else 'FAIL'} {engine} on {device}, seeds {args.seeds}, "
          f"{args.steps} updates twice: histories {'identical' if same else 'differ'} "
          f"(largest difference {out['max_difference_twice']:.3g}; {wall:.1f} s per run)")
    if device.type == "cuda":
        eager = train(cfg, args.seeds, engine="graph_eager")
        diff = max_difference(first.history, eager.history)
        out["max_difference_vs_eager_steps"] = diff
        accs = ["val_acc", "train_acc"]
        out["max_accuracy_difference_vs_eager_steps"] = max_difference(first.history[accs],
                                                                       eager.history[accs])
        print(f"captured vs the same steps run eagerly: largest history difference {diff:.3g} "
              f"(accuracy {out['max_accuracy_difference_vs_eager_steps']:.3g})")
        out["deterministic_algorithms"] = torch.are_deterministic_algorithms_enabled()
    print(json.dumps(out))


if __name__ == "__main__":
    main()

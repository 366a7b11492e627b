"""Cells per hour with N cells side by side (`python -m groklab.repro --jobs N`), one run.

For each N (default: 1, with every core per cell, and the number of cores, with one thread
per cell) a fresh clone of this commit runs the same fixed set of real default cells, the
four base cells (`baseline@<task>`: the papers' model, data and optimizer), through DVC
exactly as `make repro JOBS=N` would. Only the budget is shorter (``--steps``, default
1,000 of the papers' 7,500 updates) so the benchmark takes minutes: the work per update,
the start-up and DVC's bookkeeping per cell are those of the real cells. The data stages
run first and are not timed. Run it on an otherwise idle machine:

    .venv/bin/python benchmarks/repro_jobs.py              # N = 1 and N = cores
    .venv/bin/python benchmarks/repro_jobs.py --jobs 1 2 4 --steps 500

Prints one line per N and, as its last line, a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CELLS = ["baseline@x_plus_y", "baseline@x_minus_y", "baseline@x_div_y", "baseline@permutation"]


def sh(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")


def clone(dest: Path, steps: int, env: dict[str, str]) -> Path:
    """This commit in ``dest`` with ``train.steps`` set to ``steps``, data generated."""
    sh(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(dest)], ROOT)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["train"]["steps"] = steps
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh([sys.executable, "-m", "dvc", "repro", *(c.replace("baseline@", "generate@")
                                                  for c in CELLS)], dest, env)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cores = os.cpu_count() or 1
    parser.add_argument("--jobs", nargs="+", type=int, default=sorted({1, cores}))
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items()
           if k not in ("GROKLAB_THREADS", "MLFLOW_TRACKING_URI")}
    # dvc.yaml's commands say `python`: this interpreter's, as `make repro` puts the venv first
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    results = []
    with tempfile.TemporaryDirectory(prefix="groklab-repro-jobs-") as tmp:
        for jobs in args.jobs:
            repo = clone(Path(tmp) / f"jobs{jobs}", args.steps, env)
            t0 = time.perf_counter()
            sh([sys.executable, "-m", "groklab.repro", "--jobs", str(jobs), *CELLS], repo, env)
            wall = time.perf_counter() - t0
            row = {"jobs": jobs, "threads_per_cell": max(1, cores // jobs),
                   "cells": len(CELLS), "steps": args.steps, "wall_s": round(wall, 1),
                   "cells_per_hour": round(len(CELLS) * 3600 / wall, 1)}
            results.append(row)
            print(f"N = {jobs} ({row['threads_per_cell']} thread(s) per cell): "
                  f"{len(CELLS)} cells of {args.steps} updates in {wall:.1f} s, "
                  f"{row['cells_per_hour']} cells/hour", flush=True)
    best = max(results, key=lambda r: r["cells_per_hour"])
    print(json.dumps({"cores": cores, "results": results, "fastest_jobs": best["jobs"]}))


if __name__ == "__main__":
    main()

"""What `PRAGMA quick_check` costs a stage before it logs to a SQLite MLflow store.

Builds a store with MLflow itself (``--runs`` runs of ``--points`` metric points each, as a
stage logs its history), then times quick_check on it (median of ``--repeat``, warm page
cache, as a stage finds it right after the previous stage). Prints one JSON line.

    python benchmarks/mlflow_quick_check.py --runs 20 --points 750
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="runs to log")
    parser.add_argument("--points", type=int, default=750, help="metric points per run")
    parser.add_argument("--repeat", type=int, default=5, help="timings (median)")
    args = parser.parse_args()

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from groklab.mlflow_store import quick_check

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        client = MlflowClient(tracking_uri=uri)
        exp = client.create_experiment("bench", artifact_location=Path(tmp).as_uri())
        for _ in range(args.runs):
            run = client.create_run(exp).info.run_id
            metrics = [Metric(k, float(i), 0, i) for i in range(args.points)
                       for k in ("train_acc", "val_acc")]
            for start in range(0, len(metrics), 1000):
                client.log_batch(run, metrics=metrics[start:start + 1000])
            client.set_terminated(run)
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            quick_check(uri)
            times.append(time.perf_counter() - t0)
        size = Path(f"{tmp}/mlflow.db").stat().st_size
    json.dump({"runs": args.runs, "points": args.points, "db_bytes": size,
               "quick_check_s_median": round(statistics.median(times), 4)}, sys.stdout)
    print()


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# The mechanism study on one GPU (not yet run; 200 s allowed per cell): the CUDA test of
# measures on the captured engine, then every cell of the `mechanism` study at params.yaml's
# settings (Nanda et al.'s: p = 113, 30%, transformer1, full batch, 50,000 updates, 3 seeds)
# through the stage code, tracking off, and their mechanism events per seed.
#
#     PYTHONPATH=src OUT=/some/dir bash scripts/gpu_mechanism.sh      # from the repo root
#
# Results under $OUT: mechanism.tgz (each cell's history.csv, measures.csv, final.csv,
# config.json, summary.json; no checkpoints) and events.csv, also printed.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d /tmp/gpu-mechanism-XXXXXX)}
MODELS=$(mktemp -d /tmp/gpu-mechanism-models-XXXXXX)
export PYTHONPATH="$(pwd)/src${PYTHONPATH:+:$PYTHONPATH}" GROKLAB_TRACKING=off PYTHONUNBUFFERED=1
PY=${PYTHON:-$(command -v python3 || command -v python)}
timeout 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py -k measures 2>&1 | tail -5
tasks=$("$PY" -c 'from groklab.params import load_params as l
print(" ".join(l("params.yaml")["studies"]["mechanism"]["tasks"]))')
for task in $tasks; do
  start=$SECONDS
  timeout 200 "$PY" -m groklab.stages.train mechanism "$task" transformer1 --models "$MODELS" \
    2>&1 | tail -2
  echo "mechanism@$task-transformer1: $((SECONDS - start)) s"
done
"$PY" - "$MODELS" "$OUT/events.csv" <<'PY'
import sys
from pathlib import Path

import pandas as pd

from groklab.mechanism import Thresholds, seed_events
from groklab.params import load_params

thresholds = Thresholds.from_params(load_params("params.yaml"))
rows = []
for cell in sorted(Path(sys.argv[1], "mechanism").iterdir()):
    if not (cell / "measures.csv").exists():
        continue
    history, measures = (pd.read_csv(cell / f) for f in ("history.csv", "measures.csv"))
    budget = int(history.step.max())
    for seed, ev in seed_events(measures, history, budget, thresholds).items():
        h = history[history.seed == seed]
        hit = lambda col: next(iter(h.step[h[col] >= 0.99]), None)  # noqa: E731
        rows.append({"cell": cell.name, "seed": seed, "train_99": hit("train_acc"),
                     "val_99": hit("val_acc"), **ev})
table = pd.DataFrame(rows)
table.to_csv(sys.argv[2], index=False)
print(table.to_string())
PY
tar czf "$OUT/mechanism.tgz" --exclude='*.pt' -C "$MODELS" mechanism

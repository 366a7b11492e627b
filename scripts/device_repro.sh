#!/usr/bin/env bash
# The whole pipeline on a GPU machine in one call, bringing back what the repo commits.
#
# Here, once (needs PyPI): `bash scripts/device_wheels.sh` puts DVC, lifelines (and with
# MLFLOW=1 MLflow) and what they need beyond the GPU image's packages into .whl/ (ignored by
# git). Then, on the device, from the repo root, carrying .whl:
#
#     OUT=/some/dir JOBS=12 REPRO_LIMIT=480 bash scripts/device_repro.sh [dvc targets...]
#
# REPRO_LIMIT (seconds, default none) stops the repro phase with Ctrl-C's signal when it is
# spent: cells still training end cleanly, every finished cell is already in dvc.lock, and
# the pack phase still runs, so a run cut short by the machine's time brings back what it
# finished (`dvc repro` here goes on from there). Tracking is off unless TRACKING=on (the
# device image has no MLflow; MLFLOW=1 wheels bring it).
#
# Phases, each with its wall time: install (the wheels, where dvc is missing), git (the
# copy of the working tree becomes a repo if it is none: DVC needs one), repro (python -m
# groklab.repro --jobs JOBS: the training cells JOBS processes at a time on the one GPU,
# then evaluate and report), pack. $OUT/results.tar.gz.part-aa, -ab, ... (15 MiB each: what
# a call brings back is at most 16 MiB a file; `cat results.tar.gz.part-* | tar -xz`) hold
# dvc.lock, params.yaml and the outputs a researcher reads (data/, models/, reports/;
# checkpoints stay on the device: 222 of them would not fit what a call brings back); with
# tracking on, the MLflow runs come back as device-mlflow.db.gz.part-* (never merged into a
# local mlflow.db: open it with `MLFLOW_TRACKING_URI=sqlite:///device-mlflow.db mlflow ui`).
#
# FLEETS=1 trains the cells that share a model and batch shape as one batched model each
# (python -m groklab.repro --fleets; FLEET_MEMBERS=N caps a fleet at N members): far fewer
# kernel launches per update than one process per cell. Each member trains as its cell alone
# on the plain loop (engine `loop`, torch generators), not the CUDA-graph engine a GPU stage
# uses by default, so its draws differ from that engine's (docs/side_by_side.md).
#
# MPS=1 starts the CUDA MPS control daemon first (if the machine has it), so the cell
# processes share the GPU through one context; compare the repro phase with and without.
# On the CPU (the test does this with tiny params) the install phase is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the folder that comes back}
JOBS=${JOBS:-8}
PY=${PYTHON:-python3}
START=$SECONDS

phase() {  # phase NAME COMMAND...: run it, then one line with its wall time
  local name=$1 t0=$SECONDS
  shift
  "$@"
  echo "phase $name: $((SECONDS - t0)) s (total $((SECONDS - START)) s)"
}

install() {
  mkdir -p /tmp/site/bin
  # dvc.yaml's commands say `python`; an image may have only `python3`
  command -v python >/dev/null || ln -sf "$(command -v "$PY")" /tmp/site/bin/python
  if "$PY" -c "import dvc, lifelines" 2>/dev/null; then
    echo "dvc and lifelines present: nothing to install"
    return
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
}

as_git_repo() {  # DVC needs a git repository (or core.no_scm)
  if [ -e .git ]; then echo "a git repository already"; return; fi
  if command -v git >/dev/null; then
    git init -q -b main
    git add -A
    git -c user.name=groklab -c user.email=groklab@localhost commit -qm "device copy"
  else
    echo "no git here: DVC runs without one (core.no_scm)"
    "$PY" -m dvc config --local core.no_scm true
  fi
}

repro() {  # the pipeline, stopped like Ctrl-C once REPRO_LIMIT seconds are spent
  local rc=0 flags=(--keep-going --jobs "$JOBS")
  if [ "${FLEETS:-0}" = 1 ]; then
    flags+=(--fleets)
    [ -z "${FLEET_MEMBERS:-}" ] || flags+=(--fleet-members "$FLEET_MEMBERS")
  fi
  if [ -n "${REPRO_LIMIT:-}" ]; then
    timeout --signal=INT --kill-after=30 "$REPRO_LIMIT" \
      "$PY" -m groklab.repro "${flags[@]}" "$@" || rc=$?
  else
    "$PY" -m groklab.repro "${flags[@]}" "$@" || rc=$?
  fi
  echo "repro exit code $rc"
}

pack() {
  local paths=(dvc.lock params.yaml)
  for p in data models reports; do [ -e "$p" ] && paths+=("$p"); done
  tar -cz --exclude='*.pt' "${paths[@]}" | split -b 15m - "$OUT/results.tar.gz.part-"
  if [ -f mlflow.db ]; then gzip -c mlflow.db | split -b 15m - "$OUT/device-mlflow.db.gz.part-"; fi
  ls -l "$OUT"
}

start_mps() {
  if [ "${MPS:-0}" != 1 ]; then echo "MPS off"; return; fi
  if command -v nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d; then
    echo "MPS on"
  else
    echo "MPS asked for but not available here: running without it"
  fi
}

mkdir -p "$OUT"
export PYTHONPATH="/tmp/site:$(pwd)/src${PYTHONPATH:+:$PYTHONPATH}"
export PATH="/tmp/site/bin:$PATH"
[ "${TRACKING:-off}" = on ] || export GROKLAB_TRACKING=off
phase install install
phase git as_git_repo
phase mps start_mps
phase repro repro "$@"
phase pack pack
echo "device_repro: done in $((SECONDS - START)) s"

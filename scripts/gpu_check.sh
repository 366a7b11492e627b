#!/usr/bin/env bash
# The GPU check of the CUDA-graph training path, in at most 8 minutes on one H100: the CUDA
# tests, the speed benchmark, steps to 99% against the CPU's, the augmentation study for
# x_plus_y through the stage code, and the pipeline and first-look estimates. Each part has
# its own time limit (together 475 s), sized from runs on an H100 on 2026-11-26.
#
#     PYTHONPATH=src OUT=/some/dir bash scripts/gpu_check.sh      # from the repo root
#     GPU_CHECK_EXTRAS=1 ... bash scripts/gpu_check.sh            # + about 3.5 minutes
#
# The extras: the kernel profile at 3 and 10 seeds (which kernels make extra seeds cost),
# and the benchmark, steps to 99% and determinism with TF32 matmuls.
#
# Needs python with torch (CUDA), numpy, pandas, scipy, pyyaml, tqdm and pytest; not dvc
# or mlflow: tracking is off (GROKLAB_TRACKING=off; without mlflow the tracker skips too).
# Every part prints PASS/FAIL and figure lines, and a failure never stops the next part.
# Results: $OUT/summary.txt (every PASS/FAIL/figure line) and $OUT/parts.log (every part's
# full output, one after another), also printed.
set -u
cd "$(dirname "$0")/.."
REPO=$(pwd)
OUT=${OUT:-$(mktemp -d /tmp/gpu-check-XXXXXX)}
mkdir -p "$OUT"
PY=${PYTHON:-$(command -v python || command -v python3)}
case $PY in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # the study cds
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
export GROKLAB_TRACKING=off
LOGS=$(mktemp -d /tmp/gpu-logs-XXXXXX)  # one log per part; $OUT gets them joined
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
START=$SECONDS

note() { echo "$*" | tee -a "$SUMMARY"; }

# part NAME LIMIT_S COMMAND...: run it under a time limit into $LOGS/NAME.log; a PASS/FAIL line.
part() {
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS rc
  echo "===== $name (at most ${limit} s): $*"
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$LOGS/$name.log"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 0 ]; then
    note "== $name: PASS ($((SECONDS - t0)) s)"
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    note "== $name: FAIL (timed out after ${limit} s)"
  else
    note "== $name: FAIL (exit $rc, $((SECONDS - t0)) s)"
  fi
}

# figures LOG PYTHON_EXPR...: evaluate lines over `j`, the JSON object on LOG's last line.
figures() {
  local log=$1
  shift
  "$PY" - "$log" "$@" <<'EOF' 2>&1 | tee -a "$SUMMARY"
import json, sys
try:
    j = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
except Exception as err:  # the part failed before its JSON line
    sys.exit(print(f"   no figures from {sys.argv[1]}: {type(err).__name__}: {err}"))
for expr in sys.argv[2:]:
    try:
        print("  ", eval(expr, {"j": j}))
    except Exception as err:
        print(f"   {expr}: {type(err).__name__}: {err}")
EOF
}

part env 10 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; \
  $PY -c 'import sys, torch; print(\"versions: python\", sys.version.split()[0], \"torch\", \
  torch.__version__, \"cuda\", torch.version.cuda, \"on\", torch.cuda.get_device_name(0))'; \
  git rev-parse --short HEAD 2>/dev/null || true"
note "   $(grep -m1 '^versions:' "$LOGS/env.log"), $(date -u +%Y-%m-%d)"

part cuda_tests 60 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py

# bench: train.matmul_precision=highest (full float32, the default); bench_tf32 (an extra):
# high (TF32 tensor cores).
bench_figures() {
figures "$LOGS/$1.log" \
  "f\"{j['matmul_precision']}: ms per update by batched seeds: {j['ms_per_update']} on {j['machine']}\"" \
  "f\"{j['matmul_precision']}: base update (3 seeds) {j['ms_per_update']['3']} ms: {'PASS' if j['ms_per_update']['3'] <= 0.5 else 'FAIL'} (target <= 0.5 ms on an H100)\"" \
  "f\"{j['matmul_precision']}: 10 seeds cost {j['seeds_10_over_3']}x 3 seeds: {'PASS' if j['seeds_10_over_3'] <= 1.5 else 'FAIL'} (target <= 1.5)\"" \
  "f\"{j['matmul_precision']}: one base cell, 7,500 updates x 3 seeds: {j.get('cell_s')} s; plain eager loop {j.get('eager_loop_ms_per_update_3_seeds')} ms/update\""
}
part bench 70 "$PY" benchmarks/train_speed.py --device cuda --startup-runs 0 \
  --pipeline-steps 0 --reference-steps 0
bench_figures bench

# Steps to 99% on the GPU against the CPU's figures in README (both full float32).
CPU_STEPS="x_plus_y=2840,3200,2540 x_div_y=4070,4030,4020"
part steps_to_99 45 "$PY" benchmarks/steps_to_99.py --device cuda --fast-only \
  --tasks x_plus_y x_div_y --seeds 0 1 2 --against $CPU_STEPS
grep '^steps_to_99 ' "$LOGS/steps_to_99.log" | sed 's/^/   /' | tee -a "$SUMMARY"

# Fleets (groklab.fleet): the base cell and the four augmentations of x_plus_y trained one by
# one as their stages would (CUDA graphs), then as one batched model, 1,000 updates each.
part fleet 150 "$PY" benchmarks/fleet_speed.py --steps 1000
figures "$LOGS/fleet.log" \
  "f\"fleet: {j['cells']} cells x {j['seeds']} seeds, {j['steps']} updates: one by one {j['alone_s']} s, as one fleet {j['fleet_s']} s ({j['speedup']}x; {j['passes_per_update']} passes per update)\""

# ---- The study end to end through the stage code, as dvc.yaml runs it (adapt the stage ----
# ---- names and arguments here when the stage scripts change). ------------------------------
study_block() {
  local work failed=0 aug t0
  work=$(mktemp -d /tmp/gpu-study-XXXXXX)
  cp params.yaml "$work/"
  t0=$SECONDS  # the base run is the study's baseline cell (baseline@x_plus_y)
  (cd "$work" && $PY -m groklab.stages.train baseline x_plus_y) || failed=1
  test -f "$work/models/baseline/x_plus_y/summary.json" || failed=1
  echo "cell baseline@x_plus_y: $((SECONDS - t0)) s"
  for aug in reversal negation combined15 combined30; do
    t0=$SECONDS
    (cd "$work" && $PY -m groklab.stages.train augmentation x_plus_y $aug) || failed=1
    test -f "$work/models/augmentation/x_plus_y-$aug/summary.json" || failed=1
    echo "cell augmentation@x_plus_y-$aug: $((SECONDS - t0)) s"
  done
  return $failed
}
export -f study_block
export PY
part study 165 bash -c study_block
grep -E '^(baseline@|augmentation@|cell )' "$LOGS/study.log" | sed 's/^/   /' | tee -a "$SUMMARY"
# ---- end of the study block -----------------------------------------------------------------

# The default pipeline, and the first look (FIRST_LOOK in the Makefile, written out by
# scripts/first_look_params.py; its cells stop 200 updates after grokking, so its estimate,
# at each cell's full budget, is an upper bound), from the same start-ups.
# FIRST_LOOK_PARAMS: that file, made where dvc is (`python scripts/first_look_params.py`).
FIRST=${FIRST_LOOK_PARAMS:-}
if [ -z "$FIRST" ] && "$PY" -c "import dvc" 2>/dev/null; then
  FIRST=$(mktemp /tmp/first-look-XXXXXX.yaml)
  "$PY" scripts/first_look_params.py > "$FIRST"
fi
[ -n "$FIRST" ] || note "== first look: not estimated (no dvc here and no FIRST_LOOK_PARAMS)"
part pipeline 125 "$PY" benchmarks/train_speed.py --device cuda --seeds --reference-steps 0 \
  --eager-steps 0 --no-cell --startup-runs 2 --pipeline-steps 50 \
  ${FIRST:+--also-estimate "$FIRST"}
figures "$LOGS/pipeline.log" \
  "f\"stage start-up on this machine (process start to first update, median): {j['startup_s']} s {j['startup_runs_s']}\"" \
  "f\"the other stages' start-up (median): {j['startup_other_s']}; stages by kind {j['pipeline_stage_kinds']}\"" \
  "f\"pipeline estimate {j['pipeline_estimate_s']} s = {j['pipeline_estimate_s'] / 60:.1f} min ({j['pipeline_cells']} cells, {j['pipeline_shapes']} shapes, {j['pipeline_train_s']} s training + {j['pipeline_startup_s']} s start-up): {'PASS' if j['pipeline_estimate_s'] <= 1200 else 'FAIL'} (target <= 20 min)\"" \
  "'\\n'.join(f\"first look ({k}): estimate {e['pipeline_estimate_s']} s = {e['pipeline_estimate_s'] / 60:.1f} min ({e['pipeline_cells']} cells, {e['pipeline_train_s']} s training + {e['pipeline_startup_s']} s start-up): {'PASS' if e['pipeline_estimate_s'] <= 120 else 'FAIL'} (target <= 2 min)\" for k, e in j.get('estimates', {}).items()) or 'first look: not estimated'"

if [ -n "${GPU_CHECK_EXTRAS:-}" ]; then
  note "== extras (GPU_CHECK_EXTRAS)"
  part profile 60 "$PY" benchmarks/gpu_profile.py --seeds --profile-seeds 3 10 --top 15
  grep -E 'kernels per update' "$LOGS/profile.log" | sed 's/^/   /' | tee -a "$SUMMARY"
  part bench_tf32 60 "$PY" benchmarks/train_speed.py --device cuda --startup-runs 0 \
    --pipeline-steps 0 --reference-steps 0 --eager-steps 0 --matmul-precision high
  bench_figures bench_tf32
  part steps_to_99_tf32 45 "$PY" benchmarks/steps_to_99.py --device cuda --fast-only \
    --tasks x_plus_y x_div_y --seeds 0 1 2 --matmul-precision high --against $CPU_STEPS
  grep '^steps_to_99 ' "$LOGS/steps_to_99_tf32.log" | sed 's/^/   /' | tee -a "$SUMMARY"
  part determinism_tf32 45 "$PY" benchmarks/determinism.py --device cuda --steps 1000 \
    --matmul-precision high
  grep -E '^(determinism:|captured vs)' "$LOGS/determinism_tf32.log" | sed 's/^/   /' \
    | tee -a "$SUMMARY"
fi

for log in "$LOGS"/*.log; do echo "===== $(basename "$log" .log)"; cat "$log"; done \
  > "$OUT/parts.log"
note "== gpu_check done in $((SECONDS - START)) s; results in $OUT"
echo "===== summary"
cat "$SUMMARY"

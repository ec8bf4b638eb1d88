#!/usr/bin/env bash
# The whole GPU verdict of issue 17 in one call of at most 8 minutes, everything written under $OUT:
# build the fatbin, both load paths agree (subnormals), the GPU tests and the torch CUDA parity test,
# CUDA graphs and torch side streams, host us/step (200 tensors) vs torch fused, copy/roofline/AdamW GB/s
# aligned and misaligned, one tensor of 2**31 + 17 elements, the throughput table 1e5..4e8.
#
#   OUT=/tmp/verdict bash bench/gpu_verdict.sh            # run it (default OUT: ./verdict-<date>)
#   bash bench/gpu_verdict.sh --dry-run                   # list the phases and their time limits
#
# Each phase is `python bench/gpu_verdict.py <phase>` under its own `timeout` (its log in $OUT/<phase>.log,
# its results in $OUT/<phase>.json), so one that fails or hangs never hides the others; the phases stop
# being started when the total budget ($VERDICT_BUDGET seconds, default 465) would be exceeded.
# $OUT/phases.txt lists each phase's exit status (0 ran and passed, 1 failed, 3 skipped: no GPU/CuPy/torch,
# 124 timed out) and seconds; $OUT/verdict.md is the summary. Python: $PYTHON (default python3).
set -u
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
BUDGET="${VERDICT_BUDGET:-465}"
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT="${OUT:-$REPO/verdict-$(date -u +%Y%m%d-%H%M%S)}"
export PYTHONPATH="$REPO:$REPO/tests${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
cd "$REPO" || exit 2

# phase name limit_seconds [extra arguments]
PHASES=(
  "env 20"
  "build 60"
  "load 40"
  "tests 120"
  "graphs 40"
  "host 30"
  "bandwidth 40"
  "big 45"
  "table 60"
)

if [ "$DRY" = 1 ]; then
  total=0
  for entry in "${PHASES[@]}"; do
    set -- $entry
    printf '%-10s timeout %4ss  %s bench/gpu_verdict.py %s --out %s\n' "$1" "$2" "$PY" "$1" "$OUT"
    total=$((total + $2))
  done
  printf '%-10s timeout %4ss  %s bench/gpu_verdict.py summary --out %s\n' summary 10 "$PY" "$OUT"
  echo "total of the limits: $((total + 10)) s (budget $BUDGET s)"
  exit 0
fi

mkdir -p "$OUT"
start=$(date +%s)
: > "$OUT/phases.txt"
for entry in "${PHASES[@]}"; do
  set -- $entry
  name=$1 limit=$2
  left=$((BUDGET - ($(date +%s) - start) - 10))
  if [ "$left" -lt 5 ]; then
    echo "$name not started (budget spent)" | tee -a "$OUT/phases.txt"
    continue
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  t0=$(date +%s)
  timeout -k 5 "$limit" "$PY" bench/gpu_verdict.py "$name" --out "$OUT" > "$OUT/$name.log" 2>&1
  rc=$?
  echo "$name rc=$rc $(( $(date +%s) - t0 ))s (limit ${limit}s)" | tee -a "$OUT/phases.txt"
done
timeout -k 2 10 "$PY" bench/gpu_verdict.py summary --out "$OUT" > "$OUT/summary.log" 2>&1
cat "$OUT/verdict.md" 2>/dev/null || cat "$OUT/summary.log"
echo "total $(( $(date +%s) - start ))s; results in $OUT"

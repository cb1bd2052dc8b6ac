#!/usr/bin/env bash
# Runs the demo command of tests/integration/test_demo.py (tiny random model, --count 2) again and again, as a
# benchmark of the stop: each run under a hard timeout with faulthandler on, so a hang leaves every thread's
# stack in its log. Prints one line per run and a summary (runs, exit codes, slowest); keeps the logs of
# runs that did not exit 0 under $OUT (default /tmp/demo-stop-loop).
#   RUNS=200 LOAD=1 bash scripts/demo_stop_loop.sh     # LOAD=1: a busy-loop process per core beside it
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-100}
LIMIT_S=${LIMIT_S:-120}
OUT=${OUT:-/tmp/demo-stop-loop}
mkdir -p "$OUT"
# shellcheck source=/dev/null  # the venv bootstrap.sh makes
. .venv/bin/activate
model=$(python -c "from worker.dev.models import cached_random_qwen3; print(cached_random_qwen3('tiny'))")
burners=()
if [ "${LOAD:-0}" = 1 ]; then
  for _ in $(seq "$(nproc)"); do python -c "while True: pass" & burners+=($!); done
fi
trap 'kill "${burners[@]}" 2>/dev/null || true' EXIT
declare -A codes=()
slowest=0
for run in $(seq "$RUNS"); do
  log="$OUT/run-$run.log"
  started=$(date +%s.%N)
  set +e
  PYTHONFAULTHANDLER=1 timeout -s ABRT "$LIMIT_S" python -m worker demo --model "$model" --quantization none \
    --device cpu --rate 20 --metrics-port 0 --count 2 >"$log" 2>&1
  code=$?
  set -e
  took=$(echo "$(date +%s.%N) - $started" | bc)
  codes[$code]=$(( ${codes[$code]:-0} + 1 ))
  slowest=$(echo "if ($took > $slowest) $took else $slowest" | bc)
  echo "run $run: exit $code in ${took}s"
  if [ "$code" = 0 ]; then rm -f "$log"; fi
done
echo "runs: $RUNS; exit codes:$(for c in "${!codes[@]}"; do printf ' %s x%s' "$c" "${codes[$c]}"; done); slowest ${slowest}s; logs of the others: $OUT"

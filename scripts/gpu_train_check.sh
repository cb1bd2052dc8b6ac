#!/usr/bin/env bash
# The trainer on one GPU: a short QLoRA run (NF4, the reference recipe, capped steps) on the full-size
# Qwen3-0.6B architecture with random weights, then `notif-train eval` of the adapter with the worker's
# classifier. Checks the CUDA path and gives seconds per optimizer step. Prepare as for gpu_check.sh.
# SIZE=tiny runs the same on the tiny model (e.g. to try the script on a CPU).
set -euo pipefail
. "$(dirname "$0")/gpu_env.sh"
size=${SIZE:-0.6b}
model=$(python3 -c "from worker.dev.models import cached_random_qwen3; print(cached_random_qwen3('${size}'))")
python3 -m trainer synth --out /tmp/notif-data --n 1500 --seed 1 --train-size 1200
python3 -m trainer train --model "$model" --data /tmp/notif-data/train.jsonl --out /tmp/notif-adapter \
  --max-steps "${STEPS:-30}" --log-every 5 --no-progress 2>&1 | grep -v -i warn | tee "$OUT/train.txt"
cp /tmp/notif-adapter/training_summary.json "$OUT/"
python3 -m trainer eval --model "$model" --adapter /tmp/notif-adapter --data /tmp/notif-data/test.jsonl \
  --limit 200 --out "$OUT/eval" 2>&1 | grep -v -i warn | tail -25 | tee "$OUT/eval.txt"

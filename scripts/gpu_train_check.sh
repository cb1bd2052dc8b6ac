#!/usr/bin/env bash
# The trainer on one GPU, before and after in one session: the full-size Qwen3-0.6B architecture with
# random weights, NF4, the recipe's batch (4 x 4), STEPS optimizer steps (default 60: the first 10 are
# warm-up, seconds_per_step is the mean of the other 50), then `notif-train eval` of the adapter.
#   after     notif-train train as it is (transformers' Trainer, one pass of 16 per step) -> training_summary.json
#   variants  the switches pending a measurement: --dequantize-base, --torch-compile, --lora-dtype float32
#   before    the hand-written loop of 379ca48 (staged by scripts/gpu_prepare.sh in .gpu/before), STEPS_BEFORE steps
#   eval      the worker's classifier on 200 held-out notifications with the "after" adapter
# PARTS picks and orders them (default "after eval before variants"); the table lands in $OUT/train_speed.md
# with seconds per optimizer step and the projected time of the recipe's 2,250 steps. Prepare as for
# gpu_check.sh (scripts/gpu_prepare.sh); SIZE=tiny runs the same on the tiny model (e.g. on a CPU).
set -euo pipefail
. "$(dirname "$0")/gpu_env.sh"
size=${SIZE:-0.6b}
steps=${STEPS:-60}
nvidia-smi -L 2>/dev/null | tee "$OUT/gpu.txt" || true
python3 -c "import torch, transformers, peft, bitsandbytes, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'bitsandbytes', bitsandbytes.__version__, 'accelerate', accelerate.__version__)" | tee -a "$OUT/gpu.txt"
model=$(python3 -c "from worker.dev.models import cached_random_qwen3; print(cached_random_qwen3('${size}'))")
python3 -m trainer synth --out /tmp/notif-data --n 2500 --seed 1 --train-size 2200
common=(--model "$model" --data /tmp/notif-data/train.jsonl --log-every 10 --no-progress)

run() {  # run NAME SECONDS ARGS...: one training run, its log and summary under $OUT
  local name=$1 limit=$2; shift 2
  rm -rf "/tmp/notif-$name"
  timeout "$limit" python3 -m trainer train "${common[@]}" --out "/tmp/notif-$name" "$@" 2>&1 \
    | grep -v -i warn | tee "$OUT/train_$name.txt" || echo "$name: failed or timed out" | tee -a "$OUT/train_$name.txt"
  [ -f "/tmp/notif-$name/training_summary.json" ] && cp "/tmp/notif-$name/training_summary.json" "$OUT/summary_$name.json"
  return 0
}

for part in ${PARTS:-after eval before variants}; do
  case $part in
    after) run after 240 --max-steps "$steps"
           [ -f "$OUT/summary_after.json" ] && cp "$OUT/summary_after.json" "$OUT/training_summary.json" ;;
    variants) run dequantized 180 --max-steps "$steps" --dequantize-base
              run compiled 300 --max-steps "$steps" --torch-compile
              run lora_fp32 180 --max-steps "$steps" --lora-dtype float32 ;;
    before) if [ -d .gpu/before/trainer ]; then
              ( cd .gpu/before && PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" \
                timeout 300 python3 -m trainer train "${common[@]}" --out /tmp/notif-before \
                --max-steps "${STEPS_BEFORE:-55}" 2>&1 | grep -v -i warn | tee "$OUT/train_before.txt" ) || true
              [ -f /tmp/notif-before/training_summary.json ] && cp /tmp/notif-before/training_summary.json "$OUT/summary_before.json"
            else echo "before: .gpu/before is not staged (scripts/gpu_prepare.sh)" | tee "$OUT/train_before.txt"; fi ;;
    eval) python3 -m trainer eval --model "$model" --adapter /tmp/notif-after --data /tmp/notif-data/test.jsonl \
            --limit 200 --out "$OUT/eval" 2>&1 | grep -v -i warn | tail -25 | tee "$OUT/eval.txt" ;;
  esac
done

python3 - "$OUT" <<'EOF' | tee "$OUT/train_speed.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| run | steps | seconds per step | 2,250 steps | trainable | final loss | device |")
print("|---|---|---|---|---|---|---|")
for name in ("before", "after", "dequantized", "compiled", "lora_fp32"):
    path = out / f"summary_{name}.json"
    if not path.is_file():
        continue
    s = json.loads(path.read_text())
    # The old loop has no warm-up-free figure: its mean over the whole run (a few warm-up seconds included).
    per_step = s.get("seconds_per_step") or s["time_s"] / s["optimizer_steps"]
    how = "" if s.get("seconds_per_step") else " (whole run)"
    print(f"| {name} | {s['optimizer_steps']} | {per_step:.3f}{how} | {per_step * 2250 / 60:.1f} min | "
          f"{s['trainable_parameters']:,} | {s['final_loss']:.4f} | {s['device']} |")
EOF

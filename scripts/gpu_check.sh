#!/usr/bin/env bash
# The GPU check, one command, nothing from the network; its stages' limits (SELF_CHECK_S, TESTS_S, BENCH_S, E2E_S)
# add up to 9.5 minutes:
#   0. the fast engine's self-check at start-up, NF4 + LoRA: verdict, largest gap, seconds -> $OUT/engine_self_check.txt;
#   1. the CUDA tests (tests/gpu: exactness of both engines, bf16/NF4 agreement, CUDA graphs and FlexAttention);
#   2. `bench classifier` on the full-size Qwen3-0.6B architecture (random weights, random r=16 LoRA, real
#      tokenizer): NF4, bf16 and merged, constrained scoring by the reference engine (before) and the fast one
#      (after), batch 1..512, answers compared -> $OUT/<gpu>_classifier_engines.json (+ .png, .md);
#   3. end to end on this host: the embedded Tansu broker, a fixed-rate producer, `notif-worker serve` with the
#      NF4 model + LoRA and the fast engine; the most sustained notifications/s, p50/p99 at half of it and the
#      ratio to the classifier alone -> $OUT/<gpu>_serve_e2e.json (+ .png, .md); BEFORE=1 adds the same run
#      with one batch at a time (NOTIF_BATCHES_IN_FLIGHT=1) -> <gpu>_serve_e2e_one_batch.json.
# Prepare on a networked machine first: scripts/gpu_prepare.sh (wheels -> .whl/, tokenizer and broker -> .gpu/),
# then carry .whl and .gpu along. SIZE=tiny NO_WHEELS=1 runs the same on the tiny model (e.g. on a CPU).
# Each stage has a time limit (SIGINT first, so the benchmarks stop their broker and worker); the classifier
# JSON is written after every variant, so a cut run keeps its rows.
set -euo pipefail
. "$(dirname "$0")/gpu_env.sh"
size=${SIZE:-0.6b}
gpu=$(python3 -c "import torch; print(torch.cuda.get_device_name(0).split()[1].lower() if torch.cuda.is_available() else 'cpu')")
{ nvidia-smi -L 2>/dev/null || echo "no GPU"; } | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, peft, bitsandbytes; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'bitsandbytes', bitsandbytes.__version__)" | tee -a "$OUT/gpu.txt"
python3 -c "from worker.dev.models import cached_random_qwen3; cached_random_qwen3('${size}')"  # built once, outside the timed stages
lora=$(python3 -c "from worker.bench.classifier import random_adapter; from worker.dev.models import cached_random_qwen3; print(random_adapter(str(cached_random_qwen3('${size}'))))")

# The fast engine's self-check on this GPU (worker/model/self_check.py) as serve meets it: NF4 with a random LoRA of
# the reference's shape (merged into bf16 weights by the fast engine, kept beside them by the reference). The
# engine_self_check event: its verdict, the largest and mean confidence gaps against their tolerances (0.1, 0.02),
# the items that differ and its time (target < 2 s). One load of the model; the bench below reuses the adapter.
timeout -s INT -k 10 "${SELF_CHECK_S:-120}" python3 -c "
import sys
from worker.observe.logging import configure_logging
configure_logging('info', 'json', stream=sys.stdout)
from worker.dev.models import cached_random_qwen3
from worker.model.classifier import Classifier
from worker.settings import Settings
c = Classifier.from_settings(Settings(model=str(cached_random_qwen3('${size}')), adapter='${lora}', engine='auto',
                                      quantization='nf4'))
print('engine_info', c.engine_info)" 2>&1 | grep -E "engine_self_check|engine_info" | tee "$OUT/engine_self_check.txt" || true
timeout -s INT -k 20 "${TESTS_S:-110}" python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/gpu 2>&1 | tail -15 | tee "$OUT/gpu_tests.txt" || true

classifier="$OUT/${gpu}_classifier_engines.json"
timeout -s INT -k 20 "${BENCH_S:-200}" python3 -m worker bench classifier --size "$size" --variants "${VARIANTS:-nf4,merged,bf16}" --lora \
  --modes constrained --engines reference,fast --batch-sizes "${BATCH_SIZES:-1,8,64,256,512}" --n 512 \
  --max-seconds "${MAX_SECONDS:-2}" --json "$classifier" --plot "${classifier%.json}.png" 2>&1 \
  | grep -v -i warn | tee "${classifier%.json}.md" || true

batch=${E2E_BATCH:-256}  # NOTIF_BATCHES_IN_FLIGHT: the default (2) unless the caller sets it
serve="$OUT/${gpu}_serve_e2e.json"
NOTIF_ENGINE=fast NOTIF_MAX_BATCH_TOKENS=$((batch * 512)) timeout -s INT -k 20 "${E2E_S:-140}" python3 -m worker bench latency \
  --model "$size" --lora --serve-flags "--quantization nf4 --max-batch-size $batch" \
  --rates "${RATES:-500,1000,2000,3000,4000,6000}" --seconds "${E2E_SECONDS:-4}" --half-load \
  --classifier-json "$classifier" --classifier-batch "$batch" --ready-timeout 120 \
  --json "$serve" --plot "${serve%.json}.png" 2>&1 | grep -v -i warn | tee "${serve%.json}.md" || true
# Optional (BEFORE=1, outside the default): the same end-to-end run with one batch at a time
# (NOTIF_BATCHES_IN_FLIGHT=1, how the worker ran before batches in flight), for the before/after of the overlap.
if [ -n "${BEFORE:-}" ]; then
  NOTIF_BATCHES_IN_FLIGHT=1 NOTIF_ENGINE=fast NOTIF_MAX_BATCH_TOKENS=$((batch * 512)) timeout -s INT -k 20 "${E2E_S:-140}" \
    python3 -m worker bench latency --model "$size" --lora --serve-flags "--quantization nf4 --max-batch-size $batch" \
    --rates "${RATES:-500,1000,2000,3000,4000,6000}" --seconds "${E2E_SECONDS:-4}" --half-load \
    --classifier-json "$classifier" --classifier-batch "$batch" --ready-timeout 120 \
    --json "${serve%.json}_one_batch.json" 2>&1 | grep -v -i warn | tee "${serve%.json}_one_batch.md" || true
fi
# Optional (SHADOW=1, outside the default): what a shadow adapter costs the serving pass, NF4 + LoRA.
if [ -n "${SHADOW:-}" ]; then
  timeout -s INT -k 20 "${SHADOW_S:-150}" python3 -m worker bench shadow --size "$size" --quantization nf4 \
    --batch-sizes "${SHADOW_BATCH_SIZES:-1,8,64,256}" --n 512 --max-seconds "${MAX_SECONDS:-2}" \
    --json "$OUT/${gpu}_shadow.json" --plot "$OUT/${gpu}_shadow.png" 2>&1 | grep -v -i warn | tee "$OUT/${gpu}_shadow.md" || true
fi
ls -la "$OUT"

#!/usr/bin/env bash
# The GPU check: CUDA classifier tests, then the classifier benchmark on the full-size Qwen3-0.6B
# architecture (random weights, real tokenizer): NF4, bf16 and a merged adapter, both decoding modes,
# batch sizes up to 256. Needs nothing from the network. Prepare on a networked machine first:
#   scripts/gpu_prepare.sh        (wheels the GPU image lacks -> .whl/, the tokenizer -> .gpu/)
# Then run it in the repository root on the GPU host; results land in $OUT (default ./gpu-results).
set -euo pipefail
. "$(dirname "$0")/gpu_env.sh"
nvidia-smi -L | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, peft, bitsandbytes; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'bitsandbytes', bitsandbytes.__version__)" | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/gpu 2>&1 | tail -15 | tee "$OUT/gpu_tests.txt"
python3 -m worker bench classifier --size 0.6b --variants "${VARIANTS:-nf4,bf16,merged}" --lora \
  --batch-sizes "${BATCH_SIZES:-1,8,64,256}" --n 512 --max-seconds "${MAX_SECONDS:-6}" \
  --json "$OUT/bench_gpu.json" --plot "$OUT/bench_gpu.png" 2>&1 | grep -v -i warn | tee "$OUT/bench_gpu.md"

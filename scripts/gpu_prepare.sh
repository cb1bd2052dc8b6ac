#!/usr/bin/env bash
# Stage what scripts/gpu_check.sh needs on a GPU host without network: Python 3.12 wheels of the
# packages its image lacks (-> .whl/) and the real Qwen3 tokenizer (-> .gpu/tokenizer.tgz). Both ignored by git.
set -euo pipefail
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  bitsandbytes==0.50.2 pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 annotated-types \
  typing-inspection python-dotenv structlog aiokafka==0.14.0 async-timeout
mkdir -p .gpu
dir=$(python3 -c "from worker.dev.tokenizer import fetch_qwen3_tokenizer; print(fetch_qwen3_tokenizer())")
tar czf .gpu/tokenizer.tgz -C "$dir" tokenizer.json tokenizer_config.json
du -sh .whl .gpu

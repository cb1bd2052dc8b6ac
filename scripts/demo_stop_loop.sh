#!/usr/bin/env bash
# The demo's stop, again and again (scripts/demo_stop_loop.py): each run of the demo command of
# tests/integration/test_demo.py under a hard limit with faulthandler on, so a hang leaves every thread's stack.
#   RUNS=60 LOAD=1 bash scripts/demo_stop_loop.sh     # LOAD=1: a busy-loop process beside it
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=/dev/null  # the venv bootstrap.sh makes
. .venv/bin/activate
exec python scripts/demo_stop_loop.py "$@"

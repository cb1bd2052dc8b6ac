"""The demo's stop, again and again: a benchmark that hunts a hang at shutdown (issue #24).

Runs the command of tests/integration/test_demo.py (`notif-worker demo`, tiny random model, `--count 2`) RUNS
times, each under a hard limit with faulthandler on: past LIMIT_S the run gets SIGABRT, and faulthandler
writes every thread's stack before it dies (the worker's own stop deadline, exit 3, comes first when the
hang is in its stop). Per run: the exit code, the whole run's seconds, and the stop's (from the last result
line to the process's exit). The logs of runs that did not exit 0 are kept under OUT and their stacks
printed. LOAD busy-loop processes run beside it (default 0). SIGTERM or Ctrl-C ends the loop after the run in progress.

    python scripts/demo_stop_loop.py --runs 60 --load 1
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT_LINE = re.compile(r"^\[\s*\d+\] ")


def burn() -> None:
    while True:
        pass


def demo_command(model: str) -> list[str]:
    return [sys.executable, "-m", "worker", "demo", "--model", model, "--quantization", "none", "--device", "cpu",
            "--rate", "20", "--metrics-port", "0", "--count", "2"]


def run_once(command: list[str], env: dict[str, str], limit_s: float, log: Path) -> tuple[int, float, float]:
    """(exit code, seconds in all, seconds from the last result line to the exit)."""
    started = time.monotonic()
    last_result = started
    with open(log, "w") as out:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=out, text=True, cwd=ROOT)
        timer = threading.Timer(limit_s, process.send_signal, args=(signal.SIGABRT,))  # faulthandler dumps
        timer.start()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                out.write(line)
                if RESULT_LINE.match(line):
                    last_result = time.monotonic()
            code = process.wait()
        finally:
            timer.cancel()
    ended = time.monotonic()
    return code, ended - started, ended - last_result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=int(os.environ.get("RUNS", "100")))
    parser.add_argument("--load", type=int, default=int(os.environ.get("LOAD", "0")),
                        help="busy-loop processes beside the runs")
    parser.add_argument("--limit-s", type=float, default=float(os.environ.get("LIMIT_S", "120")))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/demo-stop-loop")))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    from worker.dev.models import cached_random_qwen3

    command = demo_command(str(cached_random_qwen3("tiny")))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1", "HF_HUB_OFFLINE": "1"}
    enough = threading.Event()  # SIGTERM/SIGINT: stop after the run in progress, with the summary
    for sig in (signal.SIGTERM, signal.SIGINT):  # also where a background shell left SIGINT ignored
        signal.signal(sig, lambda signum, frame: enough.set())
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    codes: Counter[int] = Counter()
    totals: list[float] = []
    stops: list[float] = []
    try:
        for run in range(1, args.runs + 1):
            if enough.is_set():
                break
            log = args.out / f"run-{run}.log"
            code, total, stop = run_once(command, env, args.limit_s, log)
            codes[code] += 1
            totals.append(total)
            stops.append(stop)
            print(f"run {run}: exit {code} in {total:.1f}s (stop {stop:.2f}s)", flush=True)
            if code == 0:
                log.unlink()
            else:
                print(log.read_text(errors="replace")[-20000:], flush=True)
    finally:
        for burner in burners:
            burner.kill()
    print(f"runs: {len(totals)} with {args.load} busy loops beside them; exit codes: "
          f"{', '.join(f'{code} x{n}' for code, n in sorted(codes.items()))}; run s median "
          f"{statistics.median(totals):.1f} max {max(totals):.1f}; stop s median {statistics.median(stops):.2f} "
          f"p95 {sorted(stops)[int(0.95 * (len(stops) - 1))]:.2f} max {max(stops):.2f}; "
          f"logs of the others: {args.out}")
    return 0 if set(codes) == {0} else 1


if __name__ == "__main__":
    raise SystemExit(main())

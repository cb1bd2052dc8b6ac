"""Stops with a deadline (worker/commands/stopping.py): a hung stop ends with every stack and the stage; an early
signal is remembered, not fatal."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import subprocess_env, wait_until_it_catches
from worker.commands.stopping import EXIT_HUNG, EXIT_SLACK_S, PROCESS_EXIT, EarlySignals, hard_bound_s

HUNG = """
import threading, time
from worker.commands.stopping import StopDeadline
threading.Thread(target=time.sleep, args=(3600,), name="stuck-non-daemon").start()  # blocks the exit forever
deadline = StopDeadline(0.5)
deadline.arm("finishing the batches in flight")
deadline.stage("leaving the group")
"""


def test_a_stop_past_its_deadline_writes_every_stack_names_the_stage_and_exits_3() -> None:
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-c", HUNG], env=subprocess_env(), capture_output=True, text=True,
                         timeout=60, check=False)
    elapsed = time.monotonic() - started
    assert run.returncode == EXIT_HUNG, run.stderr
    assert elapsed < 0.5 + EXIT_SLACK_S + 20  # the interpreter start on a loaded box, not the hour-long sleep
    assert "stuck at: leaving the group" in run.stderr and "stuck-non-daemon" in run.stderr
    assert "most recent call first" in run.stderr  # faulthandler's dump
    assert "stop_deadline_exceeded" in run.stdout + run.stderr


def test_a_stop_within_its_deadline_exits_normally() -> None:
    code = "from worker.commands.stopping import StopDeadline\nStopDeadline(30).arm('exiting')\n"
    run = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.returncode == 0, run.stderr


def test_an_early_signal_is_remembered_not_fatal() -> None:
    early = EarlySignals()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        early.install()
        signal.raise_signal(signal.SIGTERM)
        assert early.received == "SIGTERM"
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_batch_command_stops_on_sigterm_with_exit_130() -> None:
    """classify, train and the benches have no graceful stop of their own: SIGTERM interrupts them (exit 130),
    within the stop deadline (was: killed by the signal, -15)."""
    process = subprocess.Popen([sys.executable, "-m", "worker", "bench", "decode", "--n", "5000000"],
                               env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)  # well into the run (imports done)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr


GIL_HELD = """
import re
from worker.commands.stopping import StopDeadline
StopDeadline(0.5).arm("inference in flight")
re.match(r"(a+)+$", "a" * 64 + "b")  # C code that never lets go of the GIL: no Python thread runs again
"""


def test_a_stop_stuck_where_no_python_thread_can_run_still_ends_with_every_stack() -> None:
    """Past the timer, faulthandler's C watchdog needs no GIL: the stacks, then exit 1 (was: no end at all)."""
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-c", GIL_HELD], env=subprocess_env(), capture_output=True, text=True,
                         timeout=120, check=False)
    elapsed = time.monotonic() - started
    assert run.returncode == 1, run.stderr
    assert elapsed < hard_bound_s(0.5) + 20
    assert "Timeout (" in run.stderr and 'File "<string>", line 5' in run.stderr, run.stderr  # the stuck line


# Ways the exit of a finished command hangs forever without a deadline; each ends with exit 3 and its stage.
EXIT_HANGS = {
    # a non-daemon thread: the interpreter's exit joins it
    "thread": 'threading.Thread(target=time.sleep, args=(3600,), name="stuck-non-daemon").start()',
    # concurrent.futures joins its threads at exit, and asyncio's default executor is one (Python 3.11's
    # asyncio.run even waits for its jobs without a limit): a blocking call left in asyncio.to_thread or
    # run_in_executor (a DNS lookup that never answers, a SASL step) holds the exit forever
    "executor": "concurrent.futures.ThreadPoolExecutor().submit(time.sleep, 3600)",
}


@pytest.mark.parametrize("hang", sorted(EXIT_HANGS))
def test_a_command_whose_exit_hangs_ends_with_exit_3_naming_the_exit(hang: str) -> None:
    """The entry point arms the deadline when the command's work is done (`notif-worker config` here), so the
    interpreter's exit is bounded too: the demo's hang (it printed its results, then never exited) has an end."""
    code = (f"import concurrent.futures, sys, threading, time\n{EXIT_HANGS[hang]}\n"
            "sys.argv = ['notif-worker', 'config']\n"
            "from worker.commands.cli import entry\nraise SystemExit(entry())\n")
    run = subprocess.run([sys.executable, "-c", code], env=subprocess_env(NOTIF_SHUTDOWN_TIMEOUT_S="0.5"),
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == EXIT_HUNG, run.stderr
    assert '"shutdown_timeout_s": 0.5' in run.stdout  # the command did its work first
    assert f"stuck at: {PROCESS_EXIT}" in run.stderr and "most recent call first" in run.stderr


@pytest.mark.parametrize("command", [
    ["worker", "bench", "decode", "--n", "5000000"],
    ["trainer", "synth", "--out", "{tmp}", "--n", "3000000"],
], ids=["notif-worker bench", "notif-train synth"])
@pytest.mark.parametrize("moment", ["handler", 0.3, 1.0])
def test_sigterm_at_any_moment_of_a_batch_command_exits_0_or_130(command: list[str], moment: str | float,
                                                                   tmp_path: Path) -> None:
    """From the moment the process can catch SIGTERM at all (its handler is the first line of ours; the
    interpreter's own start-up before it cannot), through the imports and into the work: 0 before the command
    started, 130 once it runs; never -15, never a traceback."""
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in command]
    process = subprocess.Popen([sys.executable, "-m", *args], env=subprocess_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    if moment == "handler":
        wait_until_it_catches(process.pid)
    else:
        time.sleep(float(moment))
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode in (0, 130), stderr
    assert "Traceback" not in stderr, stderr
    if moment == "handler":  # caught during the imports: nothing started
        assert process.returncode == 0 and "stopped by SIGTERM before starting" in stderr, stderr

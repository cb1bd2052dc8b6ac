"""Stops with a deadline (worker/commands/stopping.py): a hung stop ends with every stack and the stage; an early
signal is remembered, not fatal."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.support import subprocess_env
from worker.commands.stopping import EXIT_HUNG, EXIT_SLACK_S, EarlySignals

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

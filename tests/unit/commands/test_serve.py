"""The serve command's wiring: registration, exit codes for bad settings and a model that fails to load, and
/healthz during a slow model load (through the real HTTP port)."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import urllib.error
import urllib.request

import pytest

from worker.commands.cli import build_parser
from worker.commands.flags import settings_from_args
from worker.commands.serve import EXIT_FAILED, EXIT_OK, EXIT_SETTINGS, run, serve
from worker.dev.instant import InstantClassifier
from worker.protocol import NotificationClassifier
from worker.settings import Settings

# The README: every model flag "overrides its NOTIF_* variable". (flag, value, setting, variable's value)
FLAGS = [("--model", "m/flag", "model", "m/env"), ("--adapter", "a/flag", "adapter", "a/env"),
         ("--quantization", "none", "quantization", "nf4"), ("--decoding", "generate", "decoding", "constrained"),
         ("--device", "cpu", "device", "cuda"), ("--dtype", "float32", "dtype", "bfloat16"),
         ("--max-batch-size", "7", "max_batch_size", "9")]


@pytest.mark.parametrize(("flag", "value", "field", "env_value"), FLAGS)
def test_a_model_flag_overrides_its_variable_and_the_variable_holds_without_it(
        monkeypatch: pytest.MonkeyPatch, flag: str, value: str, field: str, env_value: str) -> None:
    monkeypatch.setenv(f"NOTIF_{field.upper()}", env_value)
    with_flag = settings_from_args(build_parser().parse_args(["serve", flag, value]))
    without = settings_from_args(build_parser().parse_args(["serve"]))
    assert str(getattr(with_flag, field)) == value
    assert str(getattr(without, field)) == env_value


def test_merge_adapter_flag_overrides_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIF_MERGE_ADAPTER", "false")
    assert settings_from_args(build_parser().parse_args(["serve", "--merge-adapter"])).merge_adapter is True
    assert settings_from_args(build_parser().parse_args(["serve"])).merge_adapter is False


def test_invalid_settings_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NOTIF_MAX_BATCH_SIZE", "0")
    assert run(build_parser().parse_args(["serve", "--instant-classifier"])) == EXIT_SETTINGS
    assert "max_batch_size" in capsys.readouterr().err


async def test_model_load_failure_exits_1() -> None:
    def load() -> NotificationClassifier:
        raise OSError("no such model directory")

    settings = Settings(metrics_port=0, metrics_host="127.0.0.1", kafka_bootstrap_servers="127.0.0.1:1")
    assert await serve(settings, load) == EXIT_FAILED


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def wait_listening(port: int, task: asyncio.Task[int]) -> None:
    while not task.done():
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise AssertionError(f"serve exited with {task.result()} before listening")


async def test_healthz_stays_live_through_a_slow_model_load() -> None:
    """The load blocks (like a first download) for many liveness timeouts: /healthz says starting, not dead."""
    release = threading.Event()
    entered = threading.Event()

    def slow_load() -> NotificationClassifier:
        entered.set()
        assert release.wait(60), "the test never released the load"
        return InstantClassifier()

    port = free_port()
    settings = Settings(metrics_port=port, metrics_host="127.0.0.1", kafka_bootstrap_servers="127.0.0.1:1",
                        liveness_timeout_s=0.2)
    task = asyncio.create_task(serve(settings, slow_load))
    try:
        await wait_listening(port, task)
        assert await asyncio.to_thread(entered.wait, 30)
        await asyncio.sleep(1.0)  # five liveness timeouts into the load
        status, body = await asyncio.to_thread(http_get, port, "/healthz")
        assert (status, body.strip()) == (200, "starting: loading the model")
        ready_status, ready_body = await asyncio.to_thread(http_get, port, "/readyz")
        assert (ready_status, ready_body.strip()) == (503, "the model is not loaded")
    finally:
        signal.raise_signal(signal.SIGTERM)  # serve()'s own handler: the graceful stop during a load
        release.set()
    assert await asyncio.wait_for(task, 30) == EXIT_OK

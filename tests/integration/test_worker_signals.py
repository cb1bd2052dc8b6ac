"""SIGTERM at every stage of `notif-worker serve`, and the exit codes the README promises (0, 1, 2, 130)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.fault_proxy import FaultProxy
from tests.integration.kafka_helpers import (
    TopicReader,
    Topics,
    WorkerProcess,
    committed,
    eventually,
    notification_messages,
    produce,
    read_all,
)
from tests.integration.pipeline_helpers import running_worker, settings_for
from tests.support import wait_until_it_catches
from worker.stream.kafka.clients import KafkaClients

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(150)]

SHUTDOWN_S = 6.0
SLACK_S = 4.0  # process start-up and interpreter exit on a loaded 2-core box


def has_event(process: WorkerProcess, name: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        assert process.alive, process.log_tail()
        return any(event["event"] == name for event in process.events())
    return check


def event_names(process: WorkerProcess) -> list[str]:
    return [event["event"] for event in process.events()]


async def exits_in_time(process: WorkerProcess) -> float:
    """Seconds from SIGTERM to exit; asserts exit code 0 within the shutdown timeout."""
    started = time.monotonic()
    process.signal(signal.SIGTERM)
    code = await process.wait_exit(SHUTDOWN_S + SLACK_S)
    elapsed = time.monotonic() - started
    assert code == 0, process.log_tail()
    return elapsed


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """A TCP port that accepts connections and never answers: a broker that hangs mid-handshake."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"127.0.0.1:{server.getsockname()[1]}"


async def test_sigterm_during_model_load_exits_0(tiny_model_dir: Path, silent_broker: str, tmp_path: Path) -> None:
    env = {"NOTIF_KAFKA_BOOTSTRAP_SERVERS": silent_broker, "NOTIF_MODEL": str(tiny_model_dir),
           "NOTIF_QUANTIZATION": "none", "NOTIF_DEVICE": "cpu", "NOTIF_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_S)}
    process = WorkerProcess(env, tmp_path / "worker.log", args=()).start()
    try:
        await eventually(has_event(process, "http_listening"), 60, "the HTTP port open (the model loads next)")
        assert "model_loaded" not in event_names(process), "the model loaded before the signal: nothing proven"
        await exits_in_time(process)
    finally:
        process.stop()
    names = event_names(process)
    assert "model_loaded" not in names and "stopped" in names


async def test_sigterm_while_connecting_to_a_broker_that_never_answers_exits_0(
        silent_broker: str, tmp_path: Path) -> None:
    env = {"NOTIF_KAFKA_BOOTSTRAP_SERVERS": silent_broker, "NOTIF_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_S)}
    process = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        await eventually(has_event(process, "model_loaded"), 60, "the model loaded (connecting next)")
        await asyncio.sleep(1.0)  # inside the client's bootstrap, which waits 40 s for an answer
        await exits_in_time(process)
    finally:
        process.stop()
    assert "connected" not in event_names(process)


async def test_sigterm_during_a_rebalance_exits_0_and_loses_nothing(
        broker: str, make_topics: Callable[..., Awaitable[Topics]], tmp_path: Path) -> None:
    topics = await make_topics(partitions=2)
    count = 400
    await produce(broker, topics.input, notification_messages(count), partitions=2)
    env = {**topics.env(broker), "NOTIF_MAX_BATCH_SIZE": "8", "NOTIF_MAX_IN_FLIGHT": "16",
           "NOTIF_MAX_WAIT_MS": "5", "NOTIF_COMMIT_INTERVAL_MS": "100", "NOTIF_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_S)}
    slow = ("--instant-classifier", "--instant-delay-ms", "1000")
    first = WorkerProcess(env, tmp_path / "first.log", slow).start()
    second: WorkerProcess | None = None
    try:
        async with TopicReader(broker, topics.output) as outputs:
            await outputs.read_until(8, timeout_s=60)
            second = WorkerProcess(env, tmp_path / "second.log", ("--instant-classifier",)).start()
            # the first worker is draining its revoked partitions behind a 1 s model call: strike now
            await eventually(has_event(first, "partitions_revoking"), 60, "the first worker inside a rebalance")
            await exits_in_time(first)
            await outputs.read_until(count, timeout_s=60)
            ids = [json.loads(record.value)["id"] for record in await outputs.settle(1.0)]
            done = await committed(broker, topics.group, topics.input)
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert set(ids) == {f"n{i}" for i in range(count)}, "an input has no output"
    assert sum(done.values()) == count
    duplicates = sum(seen - 1 for seen in Counter(ids).values())
    assert duplicates <= 16, f"{duplicates} duplicates: more than the in-flight bound was redone"


async def test_a_second_signal_exits_130(broker: str, make_topics: Callable[..., Awaitable[Topics]],
                                         tmp_path: Path) -> None:
    topics = await make_topics(partitions=1)
    await produce(broker, topics.input, notification_messages(8))
    env = {**topics.env(broker), "NOTIF_MAX_BATCH_SIZE": "8", "NOTIF_SHUTDOWN_TIMEOUT_S": "60"}
    process = WorkerProcess(env, tmp_path / "worker.log", ("--instant-classifier", "--instant-delay-ms", "20000"))
    process.start()
    try:
        await eventually(has_event(process, "partitions_assigned"), 60, "partitions assigned")
        await asyncio.sleep(2.0)  # the 20 s model call is running: a graceful stop would wait for it
        process.signal(signal.SIGTERM)
        await eventually(has_event(process, "shutdown_requested"), 10, "the first signal handled")
        process.signal(signal.SIGTERM)
        assert await process.wait_exit(10) == 130, process.log_tail()
    finally:
        process.stop()
    assert "forced_exit" in event_names(process)


async def test_a_taken_http_port_exits_1(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        process = WorkerProcess({"NOTIF_METRICS_PORT": str(taken.getsockname()[1])}, tmp_path / "worker.log")
        process.start()
        try:
            assert await process.wait_exit(60) == 1, process.log_tail()
        finally:
            process.stop()
    assert "http_port_unavailable" in event_names(process)


@pytest.mark.parametrize("env", [
    {"NOTIF_MAX_BATCH_SIZE": "0"},
    {"NOTIF_DECODING": "beam"},
    {"NOTIF_HEARTBEAT_INTERVAL_MS": "20000", "NOTIF_SESSION_TIMEOUT_MS": "10000"},
    {"NOTIF_SECURITY_PROTOCOL": "SASL_SSL"},  # no NOTIF_SASL_MECHANISM: the Kafka clients cannot be built
], ids=["range", "choice", "heartbeat", "sasl"])
async def test_bad_settings_exit_2(env: dict[str, str], tmp_path: Path) -> None:
    process = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        assert await process.wait_exit(60) == 2, process.log_tail()
    finally:
        process.stop()


@pytest.mark.parametrize("moment", ["handler", 0.3, 1.0, "model_loaded", "connected", "partitions_assigned"])
async def test_sigterm_at_any_moment_of_start_up_exits_0_and_commits_nothing(
        moment: float | str, broker: str, make_topics: Callable[..., Awaitable[Topics]], tmp_path: Path) -> None:
    """While Python imports (the handler is installed before torch, transformers and aiokafka: "handler" is the
    first moment the process catches SIGTERM at all, the interpreter's own start-up before it cannot), while
    the model loads, while it connects, as its partitions arrive: exit 0, no traceback; nothing committed when
    nothing was consumed, and never an offset whose output is missing (was: -15 in the first second)."""
    topics = await make_topics(partitions=2)
    await produce(broker, topics.input, notification_messages(20), partitions=2)
    env = {**topics.env(broker), "NOTIF_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_S), "NOTIF_MAX_WAIT_MS": "2000",
           "NOTIF_COMMIT_INTERVAL_MS": "60000"}  # a commit would come only from the stop: none may be due
    process = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        if moment == "handler":
            assert process.process is not None
            await asyncio.to_thread(wait_until_it_catches, process.process.pid)
        elif isinstance(moment, str):
            await eventually(has_event(process, moment), 30, f"the worker logs {moment}", interval_s=0.01)
        else:
            await asyncio.sleep(moment)
        assert await exits_in_time(process) < SHUTDOWN_S + SLACK_S
    finally:
        process.stop()
    events = event_names(process)
    assert "Traceback" not in process.log_tail(100_000)
    done = await committed(broker, topics.group, topics.input)
    if "partitions_assigned" not in events:  # stopped before anything could be consumed
        assert done == {0: 0, 1: 0}
        assert "batch" not in events
    elif sum(done.values()):  # the stop finished what it had taken: each committed input has its output
        assert len(await read_all(broker, topics.output, at_least=sum(done.values()))) >= sum(done.values())
    if moment == "handler":
        assert "model_loaded" not in events and "stopped" in events


async def test_a_stop_while_the_broker_answers_nothing_is_bounded(
        fault_proxy: FaultProxy, make_proxied_topics: Callable[..., Awaitable[Topics]], tmp_path: Path) -> None:
    """SIGTERM with results unacknowledged and a broker that answers nothing (a blackholed network): the stop
    gives up on the acknowledgements, the commit and leaving the group within its deadline and exits 0; the
    next owner redoes the rest."""
    topics = await make_proxied_topics(partitions=2)
    await produce(fault_proxy.address, topics.input, notification_messages(40), partitions=2)
    env = {**topics.env(fault_proxy.address), "NOTIF_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_S),
           "NOTIF_MAX_BATCH_SIZE": "4"}
    process = WorkerProcess(env, tmp_path / "worker.log", ("--instant-classifier", "--instant-delay-ms", "300"))
    process.start()
    try:
        async with TopicReader(fault_proxy.address, topics.output) as outputs:
            await outputs.read_until(4, timeout_s=60)
        fault_proxy.blackhole()
        started = time.monotonic()
        process.signal(signal.SIGTERM)
        code = await process.wait_exit(60)
        elapsed = time.monotonic() - started
    finally:
        process.stop()
    assert code == 0 and elapsed < SHUTDOWN_S + SLACK_S, process.log_tail()
    events = event_names(process)
    assert "shutdown_deadline_passed" in events and "stopped" in events
    assert not [name for name in events if name.startswith("Unclosed")], events  # was: the producer, left open


async def test_the_stop_names_each_stage_as_it_begins(broker: str,
                                                      make_topics: Callable[..., Awaitable[Topics]]) -> None:
    """The stages the stop deadline reports when one does not finish (worker/commands/stopping.py), in order."""
    topics = await make_topics(partitions=1)
    await produce(broker, topics.input, notification_messages(10))
    stages: list[str] = []
    async with (running_worker(settings_for(topics, broker), on_stage=stages.append),
                TopicReader(broker, topics.output) as outputs):
        await outputs.read_until(10, timeout_s=60)
    names = [stage.split(" (")[0].split(":")[0] for stage in stages]
    assert names == ["draining intake", "inference in flight", "outbox publish", "commit",
                     "cancelling the pipeline's tasks", "leave group", "tokenizer thread"], stages


class StubbornClose(KafkaClients):
    """Real clients whose close, once done, goes on waiting and ignores the first cancellation (as a library's
    close that catches CancelledError to finish its own clean-up does)."""

    async def stop(self) -> None:
        await super().stop()
        try:
            await asyncio.sleep(120)
        except asyncio.CancelledError:
            await asyncio.sleep(120)


async def test_a_close_that_ignores_cancellation_cannot_hold_the_stop(
        broker: str, make_topics: Callable[..., Awaitable[Topics]]) -> None:
    """Each stage of the stop is bounded by leaving what overruns behind, not by waiting for it to end once
    cancelled (asyncio.wait_for does wait): the pipeline ends within NOTIF_SHUTDOWN_TIMEOUT_S."""
    topics = await make_topics(partitions=1)
    await produce(broker, topics.input, notification_messages(5))
    settings = settings_for(topics, broker, shutdown_timeout_s=SHUTDOWN_S)
    async with running_worker(settings, kafka=StubbornClose(settings)) as worker, \
            TopicReader(broker, topics.output) as outputs:
        await outputs.read_until(5, timeout_s=60)
        started = time.monotonic()
    elapsed = time.monotonic() - started
    assert worker.task.done() and elapsed < SHUTDOWN_S + 1, elapsed

"""The worker as a real process: kill -9, SIGTERM and a second replica joining, mid-stream."""

from __future__ import annotations

import json
import signal
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from tests.integration.kafka_helpers import (
    Sent,
    TopicReader,
    Topics,
    WorkerProcess,
    committed,
    notification_messages,
    produce,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]

COUNT = 3000
# Slow enough that the stream is still running when the test strikes: about 100 messages per second per
# worker at 16 per batch and 150 ms per model call.
WORKER_ENV = {"NOTIF_MAX_BATCH_SIZE": "16", "NOTIF_COMMIT_INTERVAL_MS": "200", "NOTIF_MAX_IN_FLIGHT": "64",
              "NOTIF_SHUTDOWN_TIMEOUT_S": "10", "NOTIF_MAX_WAIT_MS": "5"}
SLOW = ("--instant-classifier", "--instant-delay-ms", "150")


def ids_of(records: Sequence) -> list[str]:
    return [json.loads(record.value)["id"] for record in records]


def worker(topics: Topics, broker: str, log: Path, args: Sequence[str] = SLOW) -> WorkerProcess:
    return WorkerProcess({**topics.env(broker), **WORKER_ENV}, log, args).start()


async def test_kill_9_mid_stream_loses_nothing(broker: str, make_topics: Callable[..., Awaitable[Topics]],
                                               tmp_path: Path) -> None:
    topics = await make_topics(partitions=3)
    sent = await produce(broker, topics.input, notification_messages(COUNT), partitions=3)
    first = worker(topics, broker, tmp_path / "first.log")
    try:
        async with TopicReader(broker, topics.output) as outputs:
            await outputs.read_until(COUNT // 10, timeout_s=40)
            first.signal(signal.SIGKILL)
            assert await first.wait_exit(10) == -signal.SIGKILL
            before = len(outputs.records)
            done_before = await committed(broker, topics.group, topics.input)
            assert 0 < sum(done_before.values()) < COUNT  # it did commit, and it was stopped mid-stream
            second = worker(topics, broker, tmp_path / "second.log", args=("--instant-classifier",))
            try:
                await outputs.read_until(before + COUNT - sum(done_before.values()), timeout_s=60)
                seen = set(ids_of(await outputs.settle()))
            finally:
                second.stop()
    finally:
        first.stop()
    assert seen == {f"n{i}" for i in range(COUNT)}, "an input has no output"
    expect_resumed_from_commit(sent, done_before, ids_of(outputs.records[before:]))


def expect_resumed_from_commit(sent: Sequence[Sent], done: dict[int, int], redone_ids: Sequence[str]) -> None:
    """Nothing the first worker had committed is processed again by the second."""
    position = {f"n{i}": (item.partition, item.offset) for i, item in enumerate(sent)}
    again = [i for i in redone_ids if position[i][1] < done[position[i][0]]]
    assert again == []


async def test_sigterm_mid_stream_exits_0_and_commits_what_it_published(
        broker: str, make_topics: Callable[..., Awaitable[Topics]], tmp_path: Path) -> None:
    topics = await make_topics(partitions=3)
    sent = await produce(broker, topics.input, notification_messages(COUNT), partitions=3)
    first = worker(topics, broker, tmp_path / "first.log")
    try:
        async with TopicReader(broker, topics.output) as outputs:
            await outputs.read_until(COUNT // 10, timeout_s=40)
            first.signal(signal.SIGTERM)
            assert await first.wait_exit(15) == 0, first.log_tail()
            first_ids = ids_of(await outputs.settle(0.5))
            done = await committed(broker, topics.group, topics.input)
            assert 0 < sum(done.values()) < COUNT
            # everything it published is committed, and everything committed was published
            assert sorted(first_ids) == sorted(f"n{i}" for i, s in enumerate(sent) if s.offset < done[s.partition])
            second = worker(topics, broker, tmp_path / "second.log", args=("--instant-classifier",))
            try:
                await outputs.read_until(COUNT, timeout_s=60)
                all_ids = ids_of(await outputs.settle())
            finally:
                second.stop()
    finally:
        first.stop()
    events = [event["event"] for event in first.events()]
    assert events.index("shutdown_requested") < events.index("shutdown_drained") < events.index("stopped")
    assert sorted(all_ids) == sorted(f"n{i}" for i in range(COUNT))  # nothing lost, nothing done twice
    expect_resumed_from_commit(sent, done, all_ids[len(first_ids):])


async def test_second_worker_joins_mid_stream(broker: str, make_topics: Callable[..., Awaitable[Topics]],
                                              tmp_path: Path) -> None:
    topics = await make_topics(partitions=4)
    sent = await produce(broker, topics.input, notification_messages(COUNT), partitions=4)
    first = worker(topics, broker, tmp_path / "first.log")
    second = None
    try:
        async with TopicReader(broker, topics.output) as outputs:
            await outputs.read_until(COUNT // 20, timeout_s=40)
            second = worker(topics, broker, tmp_path / "second.log")
            await outputs.read_until(COUNT, timeout_s=90)
            ids = ids_of(await outputs.settle())
            done = await committed(broker, topics.group, topics.input)
            assert first.alive and second.alive
            first.signal(signal.SIGTERM)
            second.signal(signal.SIGTERM)
            assert await first.wait_exit(15) == 0, first.log_tail()
            assert await second.wait_exit(15) == 0, second.log_tail()
    finally:
        first.stop()
        if second is not None:
            second.stop()
    # counted, not a set: the revoked partitions were drained and committed, so nothing is done twice
    assert sorted(ids) == sorted(f"n{i}" for i in range(COUNT)), (
        f"{len(ids) - len(set(ids))} duplicates, {COUNT - len(set(ids))} missing")
    ends = {p: 1 + max(s.offset for s in sent if s.partition == p) for p in range(4)}
    assert done == ends  # the broker's committed offsets: every input, no further
    second_assignments = [e["partitions"] for e in second.events() if e["event"] == "partitions_assigned"]
    assert any(second_assignments), "the second worker never got a partition"
    revoked = [e for e in first.events() if e["event"] == "partitions_revoked"]
    assert revoked and all(e["committed"] for e in revoked if not e["lost"])
    for process in (first, second):
        text = process.log_path.read_text()
        assert "Traceback" not in text and "worker_failed" not in text, process.log_tail()

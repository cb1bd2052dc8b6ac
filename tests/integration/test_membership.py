"""Staying in the group: a model slower than max.poll.interval, backpressure seen through /metrics, a rebalance.

Each counts duplicates (a set would hide them) and compares the broker's committed offsets with the ends.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.kafka_helpers import (
    Sent,
    TopicReader,
    Topics,
    WorkerProcess,
    committed,
    eventually,
    notification_messages,
    produce,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(150)]


def ids_of(records: Sequence) -> list[str]:
    return [json.loads(record.value)["id"] for record in records]


def ends_of(sent: Sequence[Sent]) -> dict[int, int]:
    ends: dict[int, int] = {}
    for item in sent:
        ends[item.partition] = max(ends.get(item.partition, 0), item.offset + 1)
    return ends


def events(process: WorkerProcess, name: str) -> list[dict]:
    return [event for event in process.events() if event["event"] == name]


def scrape(process: WorkerProcess) -> dict[str, float]:
    """The worker's unlabelled samples, parsed from its real Prometheus text exposition."""
    status, body = process.get("/metrics")
    assert status == 200, body
    return {sample.name: sample.value for family in text_string_to_metric_families(body)
            for sample in family.samples if not sample.labels}


async def all_committed(broker: str, topics: Topics, ends: dict[int, int], timeout_s: float) -> None:
    async def done() -> bool:
        return await committed(broker, topics.group, topics.input) == ends

    await eventually(done, timeout_s, f"committed offsets == {ends}")


async def test_a_model_slower_than_max_poll_interval_keeps_its_membership(
        broker: str, make_topics: Callable[..., Awaitable[Topics]], tmp_path: Path) -> None:
    # Each model call (1.5 s) outlasts max.poll.interval (1 s), and 8 in flight pause both partitions after
    # two batches: before the fix the paused worker stopped polling and aiokafka left the group.
    topics = await make_topics(partitions=2)
    count = 20
    sent = await produce(broker, topics.input, notification_messages(count), partitions=2)
    env = {**topics.env(broker), "NOTIF_MAX_POLL_INTERVAL_MS": "1000", "NOTIF_SESSION_TIMEOUT_MS": "6000",
           "NOTIF_HEARTBEAT_INTERVAL_MS": "500", "NOTIF_MAX_BATCH_SIZE": "4", "NOTIF_MAX_IN_FLIGHT": "8",
           "NOTIF_MAX_WAIT_MS": "5", "NOTIF_COMMIT_INTERVAL_MS": "100"}
    process = WorkerProcess(env, tmp_path / "worker.log", ("--instant-classifier", "--instant-delay-ms", "1500"))
    process.start()
    try:
        async with TopicReader(broker, topics.output) as outputs:
            await outputs.read_until(count, timeout_s=90)
            await all_committed(broker, topics, ends_of(sent), 20)
            ids = ids_of(await outputs.settle(1.0))
        assert process.alive, process.log_tail()
        revoked = events(process, "partitions_revoked")
        process.signal(signal.SIGTERM)
        assert await process.wait_exit(20) == 0, process.log_tail()
    finally:
        process.stop()
    duplicates = {key: seen for key, seen in Counter(ids).items() if seen > 1}
    assert duplicates == {} and sorted(ids) == sorted(f"n{i}" for i in range(count))
    assert revoked == [], "the worker lost its partitions while the model was slow"
    assert len(events(process, "partitions_assigned")) == 1


async def test_backpressure_pauses_holds_the_bound_and_resumes_as_metrics_show(
        broker: str, make_topics: Callable[..., Awaitable[Topics]], tmp_path: Path) -> None:
    topics = await make_topics(partitions=2)
    count, bound = 120, 16
    sent = await produce(broker, topics.input, notification_messages(count), partitions=2)
    env = {**topics.env(broker), "NOTIF_MAX_BATCH_SIZE": "8", "NOTIF_MAX_IN_FLIGHT": str(bound),
           "NOTIF_MAX_WAIT_MS": "5", "NOTIF_COMMIT_INTERVAL_MS": "50"}
    process = WorkerProcess(env, tmp_path / "worker.log", ("--instant-classifier", "--instant-delay-ms", "100"))
    process.start()
    samples: list[dict[str, float]] = []
    try:
        await process.wait_ready()
        async with TopicReader(broker, topics.output) as outputs:
            while await outputs.poll(20) < count:
                assert process.alive, process.log_tail()
                samples.append(await asyncio.to_thread(scrape, process))
            await all_committed(broker, topics, ends_of(sent), 20)
            ids = ids_of(await outputs.settle(0.5))

            async def resumed() -> bool:
                samples.append(await asyncio.to_thread(scrape, process))
                return samples[-1].get("notif_paused_partitions") == 0

            await eventually(resumed, 10, "notif_paused_partitions back to 0")
    finally:
        process.stop()
    assert sorted(ids) == sorted(f"n{i}" for i in range(count))
    paused = [s["notif_paused_partitions"] for s in samples if "notif_paused_partitions" in s]
    assert max(paused) == 2, "backpressure never paused both partitions"
    assert max(s.get("notif_in_flight_messages", 0) for s in samples) <= bound
    assert samples[-1]["notif_in_flight_messages"] == 0

"""Batches in flight, through the broker: the next full batch is launched while one computes, outcomes keep
their order, and a pipelined batch that fails is split and retried like any other."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Sequence

import pytest

from tests.integration.kafka_helpers import (
    TopicReader,
    Topics,
    committed,
    eventually,
    notification_messages,
    produce,
)
from tests.integration.pipeline_helpers import running_worker, settings_for
from worker.contract import ClassificationResult, Notification
from worker.dev.instant import InstantClassifier
from worker.protocol import Collect

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DEVICE_S = 0.1  # the imitation GPU's time per batch


class RecordingDevice(InstantClassifier):
    """The instant classifier's imitation GPU, recording each batch's launch and read-back in order; reading
    back a batch holding a notification titled ``late_poison``, or any batch while ``broken`` is set, raises
    (an error a GPU reports late)."""

    def __init__(self) -> None:
        super().__init__(delay_s=DEVICE_S)
        self.events: list[tuple[str, int]] = []  # ("launch" | "read", batch number)
        self.sizes: list[int] = []  # of every launch
        self.broken = threading.Event()
        self._events = threading.Lock()

    def launch(self, notifications: Sequence[Notification]) -> Collect:
        with self._events:
            number = sum(kind == "launch" for kind, _ in self.events)
            self.events.append(("launch", number))
            self.sizes.append(len(notifications))
        collect = super().launch(notifications)

        def read() -> list[ClassificationResult]:
            results = collect()
            with self._events:
                self.events.append(("read", number))
            if self.broken.is_set() or any(n.title == "late_poison" for n in notifications):
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            return results

        return read

    def most_in_flight(self) -> int:
        """The most batches launched and not yet read back at any time."""
        most = running = 0
        for kind, _ in self.events:
            running += 1 if kind == "launch" else -1
            most = max(most, running)
        return most


@pytest.mark.parametrize("depth", [1, 2])
async def test_the_next_full_batch_is_launched_while_one_computes_and_order_holds(
        broker: str, make_topics: Callable[..., Awaitable[Topics]], depth: int) -> None:
    topics = await make_topics(partitions=1)
    messages = notification_messages(64)
    await produce(broker, topics.input, messages)  # all queued at once: a full batch is always waiting
    device = RecordingDevice()
    settings = settings_for(topics, broker, max_batch_size=8, max_in_flight=64, batches_in_flight=depth)
    async with running_worker(settings, device), TopicReader(broker, topics.output) as out:
        await out.read_until(len(messages), 60)
        outputs = await out.settle(0.5)
    assert [json.loads(r.value)["id"] for r in outputs] == [f"n{i}" for i in range(64)]  # once each, in order
    assert await committed(broker, topics.group, topics.input) == {0: 64}
    assert device.most_in_flight() == depth  # 2: launched behind the one computing; never more than asked
    reads = [number for kind, number in device.events if kind == "read"]
    assert reads == sorted(reads)


async def test_a_pipelined_batch_failing_late_is_split_and_its_neighbours_served(
        broker: str, make_topics: Callable[..., Awaitable[Topics]]) -> None:
    topics = await make_topics(partitions=1)
    messages = notification_messages(40)
    messages[13] = (b"bad", json.dumps({"id": "bad", "title": "late_poison"}).encode())
    await produce(broker, topics.input, messages)
    device = RecordingDevice()
    settings = settings_for(topics, broker, max_batch_size=8, max_in_flight=64, batches_in_flight=2)
    async with running_worker(settings, device) as worker, TopicReader(broker, topics.output) as out, \
            TopicReader(broker, topics.dlq) as dlq:
        await out.read_until(39, 60)
        await dlq.read_until(1, 30)
        outputs, dead = await out.settle(0.5), await dlq.settle(0.5)
    assert sorted(r.key or b"" for r in outputs) == sorted(key or b"" for key, _ in messages if key != b"bad")
    assert [r.key for r in dead] == [b"bad"]
    assert dict(dead[0].headers)["notif.error.reason"] == b"inference_error"
    assert await committed(broker, topics.group, topics.input) == {0: 40}
    assert device.most_in_flight() == 2
    assert worker.metric("notif_inference_errors_total") == 4  # the batch of 8, then 4, 2 and 1
    assert worker.metric("notif_breaker_open") == 0


async def test_behind_a_batch_that_tripped_the_breaker_the_next_is_not_split_and_liveness_holds(
        broker: str, make_topics: Callable[..., Awaitable[Topics]]) -> None:
    topics = await make_topics(partitions=1)
    messages = notification_messages(16)
    await produce(broker, topics.input, messages)
    device = RecordingDevice()
    device.broken.set()  # a lost CUDA context: every read-back fails
    settings = settings_for(topics, broker, max_batch_size=8, max_in_flight=64, batches_in_flight=2,
                            breaker_failures=1, breaker_retry_s=0.3, breaker_unhealthy_s=60, liveness_timeout_s=2)
    async with running_worker(settings, device) as worker, TopicReader(broker, topics.output) as out, \
            TopicReader(broker, topics.dlq) as dlq:
        await eventually(lambda: _is(worker.metric("notif_breaker_open") == 1), 30, "the breaker open")
        await asyncio.sleep(3.0)  # past the liveness timeout, far from breaker_unhealthy_s
        assert worker.health.live()[0], worker.health.live()[1]  # no model call is left counted as running
        assert device.sizes[:2] == [8, 8]  # both launched before the first failed
        assert device.sizes.count(4) == 2, device.sizes  # only the first batch was split; the second is held
        device.broken.clear()
        outputs = await out.read_until(len(messages), 30)
        assert await dlq.settle(0.5) == []
    assert sorted(r.key or b"" for r in outputs) == sorted(key or b"" for key, _ in messages)
    assert await committed(broker, topics.group, topics.input) == {0: 16}


async def _is(value: bool) -> bool:
    return value

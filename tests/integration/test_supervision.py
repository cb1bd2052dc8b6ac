"""An unexpected exception in a task the pipeline starts fails the worker loudly; only the acknowledged is committed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from aiokafka.structs import TopicPartition

from tests.integration.kafka_helpers import Topics, committed, notification_messages, produce, read_all
from tests.integration.pipeline_helpers import running_worker, settings_for
from worker.stream.kafka.clients import KafkaClients, Message

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


class BuggyKafka(KafkaClients):
    """The real clients, with a bug planted in the hand-over of the second batch of results."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handovers = 0

    async def send_batches(self, topic: str, messages: Sequence[Message],
                           source: TopicPartition | None = None) -> list[tuple[asyncio.Future[Any], list[int]]]:
        self.handovers += 1
        if self.handovers == 2:
            raise ZeroDivisionError("a bug in the hand-over")
        return await super().send_batches(topic, messages, source)


async def test_a_failing_publish_task_fails_the_worker(broker: str,
                                                       make_topics: Callable[..., Awaitable[Topics]]) -> None:
    topics = await make_topics(partitions=1)
    settings = settings_for(topics, broker, max_batch_size=5, max_wait_ms=0, commit_interval_ms=20)
    kafka = BuggyKafka(settings)
    with pytest.raises(ZeroDivisionError, match="a bug in the hand-over"):
        async with running_worker(settings, kafka=kafka) as worker:
            await produce(broker, topics.input, notification_messages(5, "a"))
            await read_all(broker, topics.output, at_least=5, timeout_s=30)
            await produce(broker, topics.input, notification_messages(5, "b"))
            await asyncio.wait_for(asyncio.shield(worker.task), 30)  # ends by itself, with the bug
    outputs = {r.key for r in await read_all(broker, topics.output, at_least=5, timeout_s=10)}
    position = (await committed(broker, topics.group, topics.input))[0]
    assert position == 5  # the acknowledged prefix, and not one offset past it
    assert outputs == {f"a{i}".encode() for i in range(5)}

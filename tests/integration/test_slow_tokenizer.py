"""Counting tokens runs off the event loop: a fetch of slow-to-tokenize messages (hostile 64 KB bodies on a
loaded machine take over a second each) leaves heartbeats, publishing and the model's hand-over running."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

import pytest

from tests.integration.kafka_helpers import TopicReader, Topics, committed, notification_messages, produce
from tests.integration.pipeline_helpers import running_worker, settings_for
from worker.contract import Notification
from worker.dev.instant import InstantClassifier

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TOKENIZE_S = 0.25  # per notification: 12 in one fetch would hold an event loop that counted them for 3 s


class SlowTokenizer(InstantClassifier):
    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()

    def count_tokens(self, notification: Notification) -> int:
        self.threads.add(threading.current_thread().name)
        time.sleep(TOKENIZE_S)
        return super().count_tokens(notification)


async def test_slow_tokenizing_does_not_hold_the_event_loop(
        broker: str, make_topics: Callable[..., Awaitable[Topics]]) -> None:
    topics = await make_topics(partitions=1)
    messages = notification_messages(12)
    await produce(broker, topics.input, messages)
    classifier = SlowTokenizer()
    loop = asyncio.get_running_loop()
    gaps: list[float] = []

    async def tick() -> None:
        last = loop.time()
        while True:
            await asyncio.sleep(0.01)
            gaps.append(loop.time() - last)
            last = loop.time()

    async with running_worker(settings_for(topics, broker, max_batch_size=4), classifier), \
            TopicReader(broker, topics.output) as out:
        ticker = asyncio.create_task(tick())
        outputs = await out.read_until(len(messages), 60)
        ticker.cancel()
    assert sorted(r.key or b"" for r in outputs) == sorted(key or b"" for key, _ in messages)
    assert await committed(broker, topics.group, topics.input) == {0: 12}
    assert max(gaps) < 1.0, f"the event loop stood still for {max(gaps):.2f} s"
    assert classifier.threads == {"notif-tokenize"}

"""A model that fails every call trips the circuit breaker: nothing drains to the DLQ, not-ready, then recovery."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from tests.integration.kafka_helpers import TopicReader, Topics, committed, eventually, notification_messages, produce
from tests.integration.pipeline_helpers import PoisonClassifier, RunningWorker, running_worker, settings_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def status_is(worker: RunningWorker, path: str, status: int, contains: str = "") -> None:
    async def check() -> bool:
        got, body = await worker.get(path)
        return got == status and contains in body

    await eventually(check, 30, f"{path} {status} saying {contains!r}")


async def test_a_model_failing_every_call_holds_the_stream_instead_of_draining_it(
        broker: str, make_topics: Callable[..., Awaitable[Topics]]) -> None:
    topics = await make_topics(partitions=2)
    inputs = notification_messages(20)
    await produce(broker, topics.input, inputs, partitions=2)
    classifier = PoisonClassifier()
    classifier.broken.set()
    settings = settings_for(topics, broker, max_batch_size=4, breaker_failures=2, breaker_retry_s=0.3,
                            breaker_unhealthy_s=2)
    async with running_worker(settings, classifier) as worker, \
            TopicReader(broker, topics.dlq) as dlq, TopicReader(broker, topics.output) as out:
        await status_is(worker, "/readyz", 503, "circuit breaker")
        assert worker.metric("notif_breaker_open") == 1
        await status_is(worker, "/healthz", 503, "circuit breaker")  # open past NOTIF_BREAKER_UNHEALTHY_S
        probes = classifier.calls
        await eventually(lambda: _more_calls(classifier, probes), 10, "the breaker probes again")
        assert await dlq.settle(1.0) == []  # nothing dead-lettered
        assert await committed(broker, topics.group, topics.input) == {0: 0, 1: 0}
        assert worker.metric("notif_paused_partitions") == 2

        classifier.broken.clear()  # the model works again: the held items are classified, not dead-lettered
        outputs = await out.read_until(len(inputs), 30)
        await status_is(worker, "/readyz", 200)
        await status_is(worker, "/healthz", 200)
        assert worker.metric("notif_breaker_open") == 0
        assert await dlq.settle(1.0) == []
    assert sorted({r.key for r in outputs}, key=repr) == sorted((key for key, _ in inputs), key=repr)
    assert worker.metric("notif_dead_letters_total", {"reason": "inference_error"}) == 0


async def _more_calls(classifier: PoisonClassifier, than: int) -> bool:
    return classifier.calls > than


async def test_an_item_failing_alone_is_dead_lettered_even_without_neighbours(
        broker: str, make_topics: Callable[..., Awaitable[Topics]]) -> None:
    # a single poison message in a batch of its own: the probe succeeds, so the model works and the item is bad
    topics = await make_topics(partitions=1)
    await produce(broker, topics.input, [(b"p", b'{"title": "poison"}')])
    settings = settings_for(topics, broker, breaker_failures=1)
    async with running_worker(settings, PoisonClassifier()) as worker, TopicReader(broker, topics.dlq) as dlq:
        dead = await dlq.read_until(1, 30)
        await eventually(lambda: _committed_one(broker, topics), 20, "the poison offset committed")
        assert worker.metric("notif_breaker_open") == 0
        assert (await worker.get("/readyz"))[0] == 200
    assert [dict(r.headers)["notif.error.reason"] for r in dead] == [b"inference_error"]


async def _committed_one(broker: str, topics: Topics) -> bool:
    return await committed(broker, topics.group, topics.input) == {0: 1}

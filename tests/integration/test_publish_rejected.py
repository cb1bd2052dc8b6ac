"""A dead letter the broker can never take: the worker publishes it without its value, and goes on.

The refusal is real: the input sits just under the producer's request limit (max.request.size, 2 MiB:
PRODUCER_MAX_REQUEST_BYTES) and the dead-letter headers push it over, so our producer refuses it
(MessageSizeTooLargeError, not retriable). Tansu ignores a topic's max.message.bytes, so that limit
is the one a test here can reach; a Kafka or Redpanda topic limit takes the same path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from tests.integration.kafka_helpers import (
    Topics,
    alter_topic,
    committed,
    eventually,
    notification_messages,
    produce,
    read_all,
)
from tests.integration.pipeline_helpers import running_worker, settings_for
from worker.stream.flow.records import dead_letter_headers
from worker.stream.kafka.options import PRODUCER_MAX_REQUEST_BYTES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def produce_near_limit(bootstrap: str, topic: str, key: bytes, size: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False,
                                max_request_size=2 * PRODUCER_MAX_REQUEST_BYTES)
    await producer.start()
    try:
        await (await producer.send(topic, key=key, value=b"x" * size, partition=0))
    finally:
        await producer.stop()


async def test_a_dead_letter_too_large_for_the_producer_is_published_without_its_value(
        broker: str, make_topics: Callable[..., Awaitable[Topics]]) -> None:
    # The topics take records of 4 MiB (Apache Kafka's default limit is 1 MB): the producer's 2 MiB refuses first.
    topics = await make_topics(partitions=1, configs={"max.message.bytes": str(4 * 2**20)})
    size = PRODUCER_MAX_REQUEST_BYTES - 100
    headers = dead_letter_headers([], reason="too_large", message="m" * 60, topic=topics.input, partition=0,
                                  offset=0)
    assert DefaultRecordBatchBuilder.estimate_size_in_bytes(b"big", b"x" * size, []) <= PRODUCER_MAX_REQUEST_BYTES
    assert DefaultRecordBatchBuilder.estimate_size_in_bytes(b"big", b"x" * size, headers) > PRODUCER_MAX_REQUEST_BYTES
    await produce_near_limit(broker, topics.input, b"big", size)
    after = notification_messages(10)
    await produce(broker, topics.input, after, partitions=1)

    async with running_worker(settings_for(topics, broker)) as worker:
        outputs = await read_all(broker, topics.output, at_least=len(after), timeout_s=40)
        dead = await read_all(broker, topics.dlq, at_least=1, timeout_s=20)

        async def all_committed() -> bool:
            return await committed(broker, topics.group, topics.input) == {0: 1 + len(after)}

        await eventually(all_committed, 20, "every input offset committed, the oversized one included")
        assert (await worker.get("/readyz"))[0] == 200
        assert worker.metric("notif_dead_letters_total", {"reason": "too_large"}) == 1

    assert sorted((r.key for r in outputs), key=repr) == sorted((key for key, _ in after), key=repr)
    assert len(dead) == 1
    record = dead[0]
    assert record.key == b"big" and record.value is None
    got = dict(record.headers)
    assert got["notif.error.reason"] == b"too_large"
    assert got["notif.error.value_omitted"] == b"true"
    assert got["notif.error.original_size"] == str(size).encode()
    assert b"MessageSizeTooLarge" in got["notif.error.publish_error"]
    assert got["notif.source.topic"] == topics.input.encode() and got["notif.source.offset"] == b"0"
    assert json.loads(outputs[0].value)["folder"]


async def test_a_topics_max_message_bytes_refuses_only_the_result_over_it(
        broker: str, make_topics: Callable[..., Awaitable[Topics]]) -> None:
    """Against a real broker limit (the output topic's max.message.bytes): the worker's record batches of many
    results are refused whole, so each is sent alone again first; only a result over the limit alone takes the
    publish policy's path (its input dead-lettered `publish_rejected`). Needs a broker that enforces the topic
    setting: Apache Kafka (Tansu ignores it)."""
    topics = await make_topics(partitions=1)
    await alter_topic(broker, topics.output, {"max.message.bytes": "2000"})
    normal = notification_messages(20)
    # results carry the id: this one's result is over 2,000 bytes alone, even compressed (random hex)
    big_id = "big-" + os.urandom(2500).hex()
    big = (b"big", json.dumps({"id": big_id, "title": "a result too large for the topic"}).encode())
    await produce(broker, topics.input, [*normal, big], partitions=1)
    settings = settings_for(topics, broker, max_wait_ms=200)  # one batch of all: one record batch refused whole
    async with running_worker(settings) as worker:
        outputs = await read_all(broker, topics.output, at_least=len(normal), timeout_s=60)
        dead = await read_all(broker, topics.dlq, at_least=1, timeout_s=30)

        async def all_committed() -> bool:
            return await committed(broker, topics.group, topics.input) == {0: len(normal) + 1}

        await eventually(all_committed, 30, "every input committed")
        assert (await worker.get("/readyz"))[0] == 200
    assert sorted(r.key or b"" for r in outputs) == sorted(key or b"" for key, _ in normal)
    assert [(r.key, dict(r.headers)["notif.error.reason"]) for r in dead] == [(b"big", b"publish_rejected")]
    assert b"MessageSizeTooLarge" in dict(dead[0].headers)["notif.error.message"]

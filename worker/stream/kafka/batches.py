"""Record batches built by the worker: many messages handed to a producer at once, partitioned like Kafka's default.

Per message this skips what ``AIOKafkaProducer.send`` costs: a coroutine, a size check and a future each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from worker.stream.kafka.errors import MessageSizeTooLargeForProducer, publish_failed
from worker.stream.kafka.options import PRODUCER_MAX_REQUEST_BYTES
from worker.stream.kafka.partitioner import partitions_for_keys

Headers = Sequence[tuple[str, bytes]]
Message = tuple[bytes | None, bytes | None, Headers]  # key, value, headers
Sent = list[tuple[asyncio.Future[Any], list[int]]]


async def send_batches(producer: AIOKafkaProducer, topic: str, messages: Sequence[Message]) -> Sent:
    """Hand messages to ``producer`` as whole record batches; in order within each partition.

    Each message goes to the partition the default partitioner (and so ``send``) would pick for its key.
    Returns one (future, indices into ``messages``) pair per record batch; the future resolves when the
    broker acknowledges that batch, or holds the error that stopped it. Raises PublishFailed when the
    topic's partitions are unknown.
    """
    try:
        partitions = sorted(await producer.partitions_for(topic))
    except KafkaError as exc:
        raise publish_failed(topic, exc) from exc
    groups: dict[int, list[int]] = {}
    for index, partition in enumerate(partitions_for_keys([key for key, _, _ in messages], partitions)):
        groups.setdefault(partition, []).append(index)
    sent: Sent = []
    for partition, indices in groups.items():
        builder = producer.create_batch()
        members: list[int] = []
        for index in indices:
            key, value, headers = messages[index]
            if _too_large(key, value, headers):  # what ``send`` refuses, a batch must refuse too
                sent.append((_refused(topic, key, value, headers), [index]))
                continue
            if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:  # full
                sent.append((await _submit(producer, builder, topic, partition), members))
                builder, members = producer.create_batch(), []
                builder.append(timestamp=None, key=key, value=value, headers=headers)  # a first always fits
            members.append(index)
        sent.append((await _submit(producer, builder, topic, partition), members))
    return sent


async def _submit(producer: AIOKafkaProducer, builder: Any, topic: str, partition: int) -> asyncio.Future[Any]:
    builder.close()  # complete: the sender takes it at once instead of lingering for more records
    try:
        future: asyncio.Future[Any] = await producer.send_batch(builder, topic, partition=partition)
    except KafkaError as exc:
        future = asyncio.get_running_loop().create_future()
        future.set_exception(exc)
    return future


def _too_large(key: bytes | None, value: bytes | None, headers: Headers) -> bool:
    """Whether a message is over the producer's request limit (exact size only for the few near it)."""
    rough = len(key or b"") + len(value or b"") + sum(len(name) + len(data) for name, data in headers)
    if rough < PRODUCER_MAX_REQUEST_BYTES - 1024:
        return False
    return bool(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers) > PRODUCER_MAX_REQUEST_BYTES)


def _refused(topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> asyncio.Future[Any]:
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(MessageSizeTooLargeForProducer(
        f"the message to {topic} is {size} bytes serialized; the producer's max_request_size is "
        f"{PRODUCER_MAX_REQUEST_BYTES}"))
    return future

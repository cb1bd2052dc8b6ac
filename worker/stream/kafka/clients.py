"""The Kafka clients: one consumer subscribed to the input topic and one producer, behind a small interface.

What the pipeline asks of the broker (poll, seek, pause, commit, send, probe) goes through KafkaClients;
its errors are those of worker/stream/kafka/errors.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError, MessageSizeTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from worker.settings import Settings
from worker.stream.kafka.errors import (
    UNDECODABLE_ERRORS,
    BrokerUnavailable,
    CommitRejected,
    UndecodableFetch,
    publish_failed,
)
from worker.stream.kafka.options import PRODUCER_MAX_REQUEST_BYTES, consumer_options, producer_options
from worker.stream.kafka.partitioner import partitions_for_keys

Headers = Sequence[tuple[str, bytes]]
Message = tuple[bytes | None, bytes | None, Headers]  # key, value, headers
OnRevoked = Callable[[set[TopicPartition]], Awaitable[None]]
OnAssigned = Callable[[set[TopicPartition]], None]


class KafkaClients:
    """One consumer (subscribed to the input topic) and one producer; start() may be retried."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise BrokerUnavailable("the Kafka clients are not started")
        return self._consumer

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise BrokerUnavailable("the Kafka clients are not started")
        return self._producer

    async def start(self, *, on_revoked: OnRevoked, on_assigned: OnAssigned) -> None:
        """Connect both clients and join the group; on failure both are closed again.

        ``on_revoked`` runs inside the rebalance, before the group moves on: it may finish work and
        commit. ``on_assigned`` runs after it, before the first fetch of the new assignment.
        """
        consumer = AIOKafkaConsumer(**consumer_options(self.settings))
        producer = AIOKafkaProducer(**producer_options(self.settings))
        try:
            await consumer.start()
            await producer.start()
        except (KafkaError, OSError) as exc:
            await _quietly_stop(consumer, producer)
            servers = self.settings.kafka_bootstrap_servers
            raise BrokerUnavailable(f"cannot connect to {servers}: {exc!r}") from exc
        except asyncio.CancelledError:  # a shutdown while connecting: leave nothing half open
            await asyncio.shield(_quietly_stop(consumer, producer))
            raise
        consumer.subscribe([self.settings.input_topic], listener=_Listener(on_revoked, on_assigned))
        self._consumer, self._producer = consumer, producer

    async def stop(self) -> None:
        """Leave the group and flush the producer (what is not flushed was never acknowledged)."""
        consumer, producer, self._consumer, self._producer = self._consumer, self._producer, None, None
        await _quietly_stop(consumer, producer)

    async def poll(self, *, timeout_ms: int,
                   max_records: int) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """The next records of the assigned, unpaused partitions, by partition in offset order ({} on timeout)."""
        try:
            return await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except UNDECODABLE_ERRORS as exc:  # raised by aiokafka's record reader, in the middle of a fetch
            raise UndecodableFetch(f"the client cannot decode a fetched record: {exc!r}") from exc
        except KafkaError as exc:
            raise BrokerUnavailable(f"fetch failed: {exc!r}") from exc

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Fetch the partition from ``offset`` next (records fetched beyond it are dropped and read again)."""
        self.consumer.seek(partition, offset)

    async def start_position(self, partition: TopicPartition) -> int:
        """Where this assignment of the partition began reading: the group's committed offset, else the earliest."""
        try:
            position = await self.consumer.committed(partition)
            if position is None:
                position = (await self.consumer.beginning_offsets([partition]))[partition]
        except KafkaError as exc:
            raise BrokerUnavailable(f"no start position for {partition}: {exc!r}") from exc
        return int(position)

    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment()) if self._consumer is not None else set()

    def paused(self) -> set[TopicPartition]:
        return set(self._consumer.paused()) if self._consumer is not None else set()

    def pause(self, partitions: set[TopicPartition]) -> None:
        self.consumer.pause(*partitions)

    def resume(self, partitions: set[TopicPartition]) -> None:
        self.consumer.resume(*partitions)

    def highwater(self, partition: TopicPartition) -> int | None:
        """The partition's end offset as of the last fetch (no request)."""
        try:
            return self.consumer.highwater(partition)
        except IllegalStateError:
            return None

    async def end_offsets(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        """Each partition's end offset now (a ListOffsets request: fresh even while the partition is paused).

        The larger of that and the last fetch's high watermark: Tansu answers ListOffsets with the last
        record batch's first offset plus one, which is exact only for batches of one record.
        """
        try:
            ends = await self.consumer.end_offsets(list(partitions))
        except (KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"end offsets not answered: {exc!r}") from exc
        return {tp: max(int(end), self.highwater(tp) or 0) for tp, end in ends.items()}

    def membership_lost(self) -> bool:
        """Whether the coordinator has forgotten this member (its partitions are someone else's now).

        aiokafka resets the generation to -1 when the coordinator answers UnknownMemberId or
        IllegalGeneration; it has no public accessor for that, so we read the coordinator's field.
        """
        coordinator = getattr(self._consumer, "_coordinator", None)
        return getattr(coordinator, "generation", 0) == -1

    async def commit(self, positions: dict[TopicPartition, int], *, timeout_s: float) -> None:
        """Commit positions of partitions this member owns; raises CommitRejected or BrokerUnavailable."""
        try:
            await asyncio.wait_for(self.consumer.commit(positions), timeout_s)
        except (CommitFailedError, IllegalStateError) as exc:
            raise CommitRejected(f"commit refused: {exc}") from exc
        except TimeoutError as exc:
            raise BrokerUnavailable(f"commit not answered in {timeout_s}s") from exc
        except KafkaError as exc:
            raise BrokerUnavailable(f"commit failed: {exc!r}") from exc

    async def send(self, topic: str, *, key: bytes | None, value: bytes | None,
                   headers: Headers) -> asyncio.Future[Any]:
        """Hand one message to the producer; the future resolves when the broker acknowledges it.

        Raises PublishFailed when the producer refuses the message at once; ``delivery_error`` reads
        the finished future.
        """
        try:
            return await self.producer.send(topic, value=value, key=key, headers=list(headers))
        except KafkaError as exc:
            raise publish_failed(topic, exc) from exc

    async def send_batches(self, topic: str, messages: Sequence[Message]
                           ) -> list[tuple[asyncio.Future[Any], list[int]]]:
        """Hand messages to the producer as whole record batches; in order within each partition.

        Each message goes to the partition the default partitioner (and so ``send``) would pick for
        its key. Returns one (future, indices into ``messages``) pair per record batch; the future
        resolves when the broker acknowledges that batch, or holds the error that stopped it.
        Per message this skips what ``send`` costs: a coroutine, a size check and a future each.
        Raises PublishFailed when the topic's partitions are unknown.
        """
        producer = self.producer
        try:
            partitions = sorted(await producer.partitions_for(topic))
        except KafkaError as exc:
            raise publish_failed(topic, exc) from exc
        groups: dict[int, list[int]] = {}
        for index, partition in enumerate(partitions_for_keys([key for key, _, _ in messages], partitions)):
            groups.setdefault(partition, []).append(index)
        sent: list[tuple[asyncio.Future[Any], list[int]]] = []
        for partition, indices in groups.items():
            builder = producer.create_batch()
            members: list[int] = []
            for index in indices:
                key, value, headers = messages[index]
                if _too_large(key, value, headers):  # what ``send`` refuses, a batch must refuse too
                    sent.append((_refused(topic, key, value, headers), [index]))
                    continue
                if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:  # full
                    sent.append((await self._submit(builder, topic, partition), members))
                    builder, members = producer.create_batch(), []
                    builder.append(timestamp=None, key=key, value=value, headers=headers)  # a first always fits
                members.append(index)
            sent.append((await self._submit(builder, topic, partition), members))
        return sent

    async def _submit(self, builder: Any, topic: str, partition: int) -> asyncio.Future[Any]:
        builder.close()  # complete: the sender takes it at once instead of lingering for more records
        try:
            future: asyncio.Future[Any] = await self.producer.send_batch(builder, topic, partition=partition)
        except KafkaError as exc:
            future = asyncio.get_running_loop().create_future()
            future.set_exception(exc)
        return future

    async def publish(self, topic: str, *, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        """Send one message and wait for the broker's acknowledgement."""
        delivery = await self.send(topic, key=key, value=value, headers=headers)
        try:
            await delivery
        except KafkaError as exc:
            raise publish_failed(topic, exc) from exc

    async def probe(self, *, timeout_s: float) -> None:
        """Ask the cluster for its metadata; raises BrokerUnavailable when it does not answer."""
        try:
            await asyncio.wait_for(self.consumer.topics(), timeout_s)
        except TimeoutError as exc:
            raise BrokerUnavailable(f"no metadata from the cluster in {timeout_s}s") from exc
        except (KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"metadata request failed: {exc!r}") from exc


def _too_large(key: bytes | None, value: bytes | None, headers: Headers) -> bool:
    """Whether a message is over the producer's request limit (exact size only for the few near it)."""
    rough = len(key or b"") + len(value or b"") + sum(len(name) + len(data) for name, data in headers)
    if rough < PRODUCER_MAX_REQUEST_BYTES - 1024:
        return False
    return bool(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers) > PRODUCER_MAX_REQUEST_BYTES)


def _refused(topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> asyncio.Future[Any]:
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(MessageSizeTooLargeError(
        f"the message to {topic} is {size} bytes serialized; the producer's max_request_size is "
        f"{PRODUCER_MAX_REQUEST_BYTES}"))
    return future


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, on_revoked: OnRevoked, on_assigned: OnAssigned) -> None:
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._on_assigned(set(assigned))


async def _quietly_stop(consumer: AIOKafkaConsumer | None, producer: AIOKafkaProducer | None) -> None:
    """Close clients on the way out; a broker that is gone cannot make closing fail."""
    for client in (consumer, producer):
        if client is not None:
            with suppress(KafkaError, OSError):
                await client.stop()

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
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from worker.settings import Settings
from worker.stream.kafka.batches import Headers, Message, Sent, send_batches
from worker.stream.kafka.errors import (
    UNDECODABLE_ERRORS,
    AuthenticationFailed,
    BrokerUnavailable,
    CommitRejected,
    TransactionFailed,
    UndecodableFetch,
    access_denied,
    publish_failed,
)
from worker.stream.kafka.options import consumer_options, login_refusal, producer_options
from worker.stream.kafka.transactions import PartitionTransactions

__all__ = ["Headers", "KafkaClients", "Message"]

OnRevoked = Callable[[set[TopicPartition]], Awaitable[None]]
OnAssigned = Callable[[set[TopicPartition]], None]


class KafkaClients:
    """One consumer (subscribed to the input topic) and one producer; start() may be retried.

    With NOTIF_DELIVERY=exactly_once, also one transactional producer per owned input partition
    (worker/stream/kafka/transactions.py), opened as partitions are assigned and closed as they are revoked;
    the shared producer then carries only what stays outside the transactions (the shadow's results).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        exactly_once = settings.delivery == "exactly_once"
        self.transactions: PartitionTransactions | None = PartitionTransactions(settings) if exactly_once else None

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
            refusal = await login_refusal(self.settings)  # aiokafka's bootstrap error does not say why
            if refusal is not None:
                raise AuthenticationFailed(f"{servers} refused us: {refusal.detail}", fix=refusal.fix) from exc
            raise BrokerUnavailable(f"cannot connect to {servers}: {exc!r}") from exc
        except asyncio.CancelledError:  # a shutdown while connecting: leave nothing half open
            await asyncio.shield(_quietly_stop(consumer, producer))
            raise
        consumer.subscribe([self.settings.input_topic],
                           listener=_Listener(on_revoked, on_assigned, self.transactions))
        self._consumer, self._producer = consumer, producer

    async def stop(self) -> None:
        """Leave the group and flush the producer (what is not flushed was never acknowledged)."""
        consumer, producer, self._consumer, self._producer = self._consumer, self._producer, None, None
        await _quietly_stop(consumer, producer)
        if self.transactions is not None:
            await self.transactions.close_all()

    async def poll(self, *, timeout_ms: int,
                   max_records: int) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """The next records of the assigned, unpaused partitions, by partition in offset order ({} on timeout)."""
        try:
            return await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except UNDECODABLE_ERRORS as exc:  # raised by aiokafka's record reader, in the middle of a fetch
            raise UndecodableFetch(f"the client cannot decode a fetched record: {exc!r}") from exc
        except KafkaError as exc:
            denied = access_denied(exc, "Read", group=self.settings.group_id)
            if denied is not None:  # the group's or the input topic's Read ACL: retried until granted
                raise denied from exc
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

    async def _producer_for(self, source: TopicPartition | None) -> AIOKafkaProducer:
        """The shared producer, or with exactly-once the transactional producer of the input partition ``source``."""
        if self.transactions is not None and source is not None:
            return await self.transactions.producer(source)
        return self.producer

    async def send(self, topic: str, *, key: bytes | None, value: bytes | None, headers: Headers,
                   source: TopicPartition | None = None) -> asyncio.Future[Any]:
        """Hand one message to the producer; the future resolves when the broker acknowledges it.

        ``source``: the input partition it answers for (with exactly-once, its transaction takes it).
        Raises PublishFailed when the producer refuses the message at once; ``delivery_error`` reads
        the finished future.
        """
        try:
            return await (await self._producer_for(source)).send(topic, value=value, key=key, headers=list(headers))
        except KafkaError as exc:
            raise publish_failed(topic, exc, before_sending=True) from exc

    async def send_batches(self, topic: str, messages: Sequence[Message],
                           source: TopicPartition | None = None) -> Sent:
        """Hand messages over as whole record batches (worker/stream/kafka/batches.py), in order per partition."""
        return await send_batches(await self._producer_for(source), topic, messages)

    async def publish(self, topic: str, *, key: bytes | None, value: bytes | None, headers: Headers,
                      source: TopicPartition | None = None) -> None:
        """Send one message in a record batch of its own and wait for the broker's acknowledgement.

        A batch of its own: the producer would otherwise batch it with whatever else is being sent, and a
        message retried because its batch was over the topic's max.message.bytes could never be judged alone.
        """
        [(delivery, _)] = await self.send_batches(topic, [(key, value, headers)], source)
        try:
            await delivery
        except KafkaError as exc:
            raise publish_failed(topic, exc) from exc

    async def commit_transaction(self, tp: TopicPartition, position: int, *, timeout_s: float) -> None:
        """Exactly-once: commit the partition's transaction with its input position (raises TransactionFailed)."""
        if self.transactions is None:
            raise TransactionFailed("exactly-once commit without transactions (NOTIF_DELIVERY=at_least_once)")
        await self.transactions.commit(tp, position, timeout_s=timeout_s)

    async def probe(self, *, timeout_s: float) -> None:
        """Ask the cluster for its metadata; raises BrokerUnavailable when it does not answer."""
        try:
            await asyncio.wait_for(self.consumer.topics(), timeout_s)
        except TimeoutError as exc:
            raise BrokerUnavailable(f"no metadata from the cluster in {timeout_s}s") from exc
        except (KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"metadata request failed: {exc!r}") from exc


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """The pipeline's rebalance callbacks, with the transactional producers opened and closed around them."""

    def __init__(self, on_revoked: OnRevoked, on_assigned: OnAssigned,
                 transactions: PartitionTransactions | None) -> None:
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned
        self._transactions = transactions

    async def on_partitions_revoked(self, revoked: Any) -> None:
        try:
            await self._on_revoked(set(revoked))  # finishes and commits the partitions' transactions
        finally:
            if self._transactions is not None:
                await self._transactions.close(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._on_assigned(set(assigned))  # first: the fetcher may hand out records before this callback ends
        if self._transactions is not None:
            await self._transactions.open(set(assigned))  # fences each partition's previous owner; sends wait


async def _quietly_stop(consumer: AIOKafkaConsumer | None, producer: AIOKafkaProducer | None) -> None:
    """Close clients on the way out, both at once: a close the stop's deadline cuts short (a broker that answers
    nothing holds the consumer's LeaveGroup) leaves neither unclosed. A broker that is gone cannot make closing
    fail."""
    await asyncio.gather(*(_quietly_stop_one(client) for client in (consumer, producer) if client is not None))


async def _quietly_stop_one(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    with suppress(KafkaError, OSError):
        await client.stop()

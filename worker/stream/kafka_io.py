"""The Kafka edge: aiokafka consumer and producer built from Settings, aiokafka errors translated to ours.

Nothing past this module imports aiokafka's error types; the pipeline sees only the exceptions below.

Exceptions:
    BrokerError              base class
    ├── BrokerUnavailable    the cluster cannot be reached or did not answer in time (retried)
    ├── CommitRejected       the group moved on: the partitions may belong to another member now
    ├── PublishFailed        a result or dead letter was not acknowledged (retried)
    ├── UndecodableFetch     the client could not decode a fetched record (worker/stream/undecodable.py)
    └── KafkaConfigError     the settings cannot describe a working client
"""

from __future__ import annotations

import asyncio
import gzip
import random
import zlib
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka import errors as Errors
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import (
    CommitFailedError,
    CorruptRecordException,
    IllegalStateError,
    KafkaError,
    MessageSizeTooLargeError,
    UnsupportedCodecError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from worker.settings import Settings

Headers = Sequence[tuple[str, bytes]]
Message = tuple[bytes | None, bytes | None, Headers]  # key, value, headers
OnRevoked = Callable[[set[TopicPartition]], Awaitable[None]]
OnAssigned = Callable[[set[TopicPartition]], None]

# Room above the largest record the consumer fetches (1 MiB by default), so a dead letter that carries
# an oversized input unchanged is never too large for our own producer.
PRODUCER_MAX_REQUEST_BYTES = 2 * 1024 * 1024
REBALANCE_MARGIN_MS = 10_000
PRODUCER_LINGER_MS = 5
# Record batches the worker builds (KafkaClients.send_batches) hold up to this many bytes per partition.
# aiokafka's 16 KiB default fits ~60 results; the broker's default limit on a batch is 1 MB.
PRODUCER_BATCH_BYTES = 512 * 1024
# How long the broker may hold a fetch when no data is there. Kafka and Redpanda answer as soon as a record
# arrives; Tansu holds it for the whole wait, which then sets the end-to-end latency (500 ms by default).
FETCH_MAX_WAIT_MS = 100


class BrokerError(Exception):
    """Base class of the Kafka edge's errors."""


class BrokerUnavailable(BrokerError):
    """The cluster could not be reached or did not answer in time."""


class CommitRejected(BrokerError):
    """An offset commit the group refused: it has rebalanced, or the partition is not ours any more."""


class PublishFailed(BrokerError):
    """A message was not acknowledged by the broker.

    ``refused`` names why the broker or producer refuses this message for good (``too_large``,
    ``invalid_topic``, ``not_authorized``, ``invalid_record``); None means transient: retry it.
    """

    def __init__(self, message: str, *, refused: str | None = None) -> None:
        super().__init__(message)
        self.refused = refused

    @property
    def retriable(self) -> bool:
        return self.refused is None


# Errors that no retry can cure, by the reason a dead letter records. Everything else (timeouts,
# connections, leader changes, unknown topics that may yet be created) is retried.
_REFUSALS: dict[type[KafkaError], str] = {
    Errors.MessageSizeTooLargeError: "too_large",
    Errors.RecordListTooLargeError: "too_large",
    Errors.InvalidTopicError: "invalid_topic",
    Errors.TopicAuthorizationFailedError: "not_authorized",
    Errors.ClusterAuthorizationFailedError: "not_authorized",
    Errors.CorruptRecordException: "invalid_record",
    Errors.PolicyViolationError: "invalid_record",
}


def publish_failed(topic: str, exc: BaseException) -> PublishFailed:
    """Our error for an aiokafka publish error: transient, or refused for good (and why)."""
    refused = next((reason for kind, reason in _REFUSALS.items() if isinstance(exc, kind)), None)
    return PublishFailed(f"publish to {topic} failed: {exc!r}", refused=refused)


class UndecodableFetch(BrokerError):
    """A fetched record the client cannot decode: a header key that is not UTF-8, a CRC mismatch, a broken batch.

    aiokafka raises these while it iterates a fetch, after it has taken records of other partitions
    (and of this one, before the bad record) that it then never returns: the caller must rewind.
    """


# What aiokafka's record reader raises for a record it cannot decode: a header key that is not UTF-8, a
# CRC mismatch or malformed batch, a codec it lacks, a batch that says gzip but is not.
_UNDECODABLE = (UnicodeDecodeError, CorruptRecordException, UnsupportedCodecError, gzip.BadGzipFile, zlib.error,
                EOFError)


class KafkaConfigError(BrokerError):
    """Settings that cannot describe a working client."""


def backoff_s(attempt: int, max_s: float, base_s: float = 0.5) -> float:
    """Exponential backoff: base, 2x base, 4x base, ... capped at max_s."""
    return float(min(max_s, base_s * 2 ** min(attempt, 30)))


NUMPY_MIN_KEYS = 16  # below this, aiokafka's per-key murmur2 is cheaper than numpy's fixed costs
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2_same_length(keys: Sequence[bytes]) -> list[int]:
    """aiokafka's (the Java client's) murmur2 of many keys of one length at once, in uint32 arithmetic."""
    n, length = len(keys), len(keys[0])
    data = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(n, length)
    m = np.uint32(_M)
    h = np.full(n, (0x9747B28C ^ length) & _MASK, dtype=np.uint32)
    words = length // 4
    if words:
        k = np.ascontiguousarray(data[:, :words * 4]).view("<u4") * m
        k ^= k >> np.uint32(24)
        k *= m
        for j in range(words):
            h *= m
            h ^= k[:, j]
    tail, extra = length & ~3, length & 3
    if extra >= 3:
        h ^= data[:, tail + 2].astype(np.uint32) << np.uint32(16)
    if extra >= 2:
        h ^= data[:, tail + 1].astype(np.uint32) << np.uint32(8)
    if extra >= 1:
        h ^= data[:, tail].astype(np.uint32)
        h *= m
    h ^= h >> np.uint32(13)
    h *= m
    h ^= h >> np.uint32(15)
    return [int(value) for value in h.tolist()]


def partitions_for_keys(keys: Sequence[bytes | None], partitions: Sequence[int]) -> list[int]:
    """The partition Kafka's default partitioner picks for each key (murmur2; random without a key).

    Keys of equal length (ids usually are) are hashed together with numpy: about 0.5 us a key in a
    group of 64, against 9 us for aiokafka's byte-by-byte loop.
    """
    chosen = [0] * len(keys)
    by_length: dict[int, list[int]] = {}
    for index, key in enumerate(keys):
        if key is None:
            chosen[index] = random.choice(partitions)
        else:
            by_length.setdefault(len(key), []).append(index)
    count = len(partitions)
    for indices in by_length.values():
        group = [keys[i] or b"" for i in indices]
        hashes = murmur2_same_length(group) if len(group) >= NUMPY_MIN_KEYS else [murmur2(k) for k in group]
        for index, value in zip(indices, hashes, strict=True):
            chosen[index] = partitions[(value & 0x7FFFFFFF) % count]
    return chosen


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection options shared by consumer and producer: brokers, client id, TLS and SASL."""
    options: dict[str, Any] = {
        "bootstrap_servers": [server.strip() for server in settings.kafka_bootstrap_servers.split(",")],
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=settings.ssl_cafile, certfile=settings.ssl_certfile, keyfile=settings.ssl_keyfile
        )
    if settings.security_protocol.startswith("SASL"):
        if settings.sasl_mechanism is None:
            raise KafkaConfigError(f"{settings.security_protocol} needs NOTIF_SASL_MECHANISM")
        if settings.sasl_mechanism == "OAUTHBEARER":
            raise KafkaConfigError("SASL OAUTHBEARER needs a token provider; the worker does not configure one")
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        password = settings.sasl_password
        options["sasl_plain_password"] = password.get_secret_value() if password is not None else None
    return options


def consumer_options(settings: Settings) -> dict[str, Any]:
    """The consumer: our own commits, earliest offset for a new group, membership timing from Settings.

    A rebalance waits for every member's revocation callback: ours drains the revoked partitions (up to
    NOTIF_SHUTDOWN_TIMEOUT_S) and then commits them (up to NOTIF_COMMIT_TIMEOUT_S), so the rebalance timeout
    leaves room above both. The worker polls even while every partition is paused (worker/stream/intake.py),
    so max.poll.interval counts the time between polls, never the model's time.
    """
    drain_and_commit_ms = int((settings.shutdown_timeout_s + settings.commit_timeout_s) * 1000)
    return {
        **client_options(settings),
        "group_id": settings.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "rebalance_timeout_ms": drain_and_commit_ms + REBALANCE_MARGIN_MS,
        "max_poll_interval_ms": settings.max_poll_interval_ms,
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
    }


def producer_options(settings: Settings) -> dict[str, Any]:
    """The producer: every in-sync replica acknowledges; idempotent unless the broker cannot do it."""
    return {
        **client_options(settings),
        "acks": "all",
        "enable_idempotence": settings.producer_idempotence,
        "linger_ms": PRODUCER_LINGER_MS,
        "max_request_size": PRODUCER_MAX_REQUEST_BYTES,
        "max_batch_size": PRODUCER_BATCH_BYTES,
        "request_timeout_ms": settings.publish_timeout_ms,
    }


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
        except _UNDECODABLE as exc:  # raised by aiokafka's record reader, in the middle of a fetch
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


def delivery_error(topic: str, delivery: asyncio.Future[Any]) -> PublishFailed | None:
    """Why a finished delivery future failed, as PublishFailed; None when the broker acknowledged it."""
    if delivery.cancelled():
        return PublishFailed(f"publish to {topic} was cancelled")
    exc = delivery.exception()
    return None if exc is None else publish_failed(topic, exc)


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

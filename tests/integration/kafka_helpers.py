"""Helpers for broker tests: produce, read topics, committed offsets, worker subprocesses, polling."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import ConsumerRecord
from confluent_kafka import Consumer, Producer

from tests.support import subprocess_env
from worker.dev.broker import create_topics_async, free_port

# Which broker the suite's ``broker`` fixture starts: Apache Kafka (the reference) or the embedded Tansu.
TEST_BROKER = os.environ.get("NOTIF_TEST_BROKER", "kafka")
if TEST_BROKER not in ("kafka", "tansu"):
    raise ValueError(f"NOTIF_TEST_BROKER must be kafka or tansu, not {TEST_BROKER!r}")
EXTERNAL_BOOTSTRAP = os.environ.get("NOTIF_TEST_BOOTSTRAP", "")


@dataclass(frozen=True)
class Topics:
    """Names of one test's topics and consumer group; ``idempotent``: the broker has the idempotent producer
    (the worker's default stays on; Tansu lacks it)."""

    input: str
    output: str
    dlq: str
    group: str
    idempotent: bool = False

    def env(self, bootstrap: str) -> dict[str, str]:
        return {
            "NOTIF_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "NOTIF_INPUT_TOPIC": self.input,
            "NOTIF_OUTPUT_TOPIC": self.output, "NOTIF_DLQ_TOPIC": self.dlq, "NOTIF_GROUP_ID": self.group,
            "NOTIF_PRODUCER_IDEMPOTENCE": str(self.idempotent).lower(),
        }


def topic_maker(bootstrap: str, *, idempotent: bool) -> Callable[..., Awaitable[Topics]]:
    """Create uniquely named input/output/dead-letter topics (and a group name) for one test."""

    async def make(partitions: int = 3, configs: dict[str, str] | None = None) -> Topics:
        suffix = uuid.uuid4().hex[:10]
        topics = Topics(f"raw-{suffix}", f"classified-{suffix}", f"dlq-{suffix}", f"group-{suffix}",
                        idempotent=idempotent)
        await create_topics_async(bootstrap, [topics.input, topics.output, topics.dlq], partitions, configs=configs)
        return topics

    return make


async def eventually(condition: Callable[[], Awaitable[bool]], timeout_s: float, what: str,
                     interval_s: float = 0.1) -> None:
    """Poll an async condition until it holds; fail with ``what`` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for: {what}")
        await asyncio.sleep(interval_s)


@dataclass(frozen=True)
class Sent:
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int


async def produce(bootstrap: str, topic: str, messages: Sequence[tuple[bytes | None, bytes | None]],
                  headers: Sequence[tuple[str, bytes]] = (), partitions: int | None = None) -> list[Sent]:
    """Send messages (round-robin over partitions when given) and return where each landed."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for index, (key, value) in enumerate(messages):
            partition = index % partitions if partitions else None
            futures.append(await producer.send(topic, value=value, key=key, headers=list(headers),
                                               partition=partition))
        metadata = [await future for future in futures]
    finally:
        await producer.stop()
    return [Sent(key, value, md.partition, md.offset) for (key, value), md in zip(messages, metadata, strict=True)]


RawHeaders = Sequence[tuple[str, bytes]]
BAD_KEY_MARK = "\x01BADKEY\x01"  # a header key written as this goes out as the non-UTF-8 bytes below
BAD_KEY_BYTES = b"\xff\xfeBADKY\x01"
_CRC_AT, _CRC_FROM, _ATTRIBUTES_AT, _FIRST_RECORD_AT = 17, 21, 21, 61


def build_batch(records: Sequence[tuple[bytes | None, bytes | None, RawHeaders]], *, corrupt_crc: bool = False,
                break_records: bool = False, compression: int = 0, claim_codec: int | None = None) -> bytes:
    """One record batch as a producer writes it, built by aiokafka's own builder, then spoiled on request.

    A header key named BAD_KEY_MARK becomes BAD_KEY_BYTES (not UTF-8, as Go clients allow) with the CRC
    fixed again; ``corrupt_crc`` flips the CRC; ``break_records`` makes the first record's length claim
    more bytes than the batch holds, under a valid CRC; ``claim_codec`` sets the batch's compression bits
    to that codec without compressing (7: a codec no client knows), under a valid CRC.
    """
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=compression, is_transactional=0, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for delta, (key, value, headers) in enumerate(records):
        builder.append(delta, timestamp=None, key=key, value=value, headers=list(headers))
    batch = bytearray(builder.build())
    mark = BAD_KEY_MARK.encode()
    while (at := batch.find(mark)) >= 0:
        batch[at:at + len(mark)] = BAD_KEY_BYTES
    if break_records:
        batch[_FIRST_RECORD_AT] = 0x7E  # zigzag varint 63: more than is left
    if claim_codec is not None:
        attributes = struct.unpack_from(">h", batch, _ATTRIBUTES_AT)[0]
        struct.pack_into(">h", batch, _ATTRIBUTES_AT, (attributes & ~0x07) | claim_codec)
    struct.pack_into(">I", batch, _CRC_AT, calc_crc32c(bytes(batch[_CRC_FROM:])))
    if corrupt_crc:
        batch[_CRC_AT] ^= 0xFF
    return bytes(batch)


async def produce_raw(bootstrap: str, topic: str, partition: int, batches: Sequence[bytes]) -> list[int]:
    """Write record batches as they are with a low-level Produce request; returns each batch's base offset.

    The producer API cannot send what these tests need (a header key that is not UTF-8, a wrong CRC);
    brokers that store batches as sent (Tansu does) hand them to consumers unchanged.
    """
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        await client.force_metadata_update()
        node = client.cluster.leader_for_partition(TopicPartition(topic, partition))
        offsets = []
        for batch in batches:
            response = await client.send(node, ProduceRequest(
                transactional_id=None, required_acks=-1, timeout=10_000, topics=[(topic, [(partition, batch)])]))
            (_, [(_, error_code, offset, *_)]), = response.topics
            assert error_code == 0, f"the broker refused a raw batch: error {error_code}"
            offsets.append(offset)
        return offsets
    finally:
        await client.close()


def notification_messages(count: int, prefix: str = "n") -> list[tuple[bytes | None, bytes | None]]:
    """Valid JSON notifications with ids prefix0..prefixN, keyed by id."""
    return [(f"{prefix}{i}".encode(), json.dumps({"id": f"{prefix}{i}", "title": f"message {i}"}).encode())
            for i in range(count)]


async def partitions_of(bootstrap: str, topic: str) -> list[TopicPartition]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        return [TopicPartition(topic, p) for p in sorted(await producer.partitions_for(topic))]
    finally:
        await producer.stop()


class TopicReader:
    """Reads a topic from the beginning (no group) and keeps every record it has seen.

    Counting records by reading, not by end offsets: Tansu's ListOffsets answers are not exact.
    """

    def __init__(self, bootstrap: str, topic: str, *, isolation_level: str = "read_uncommitted") -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.isolation_level = isolation_level  # read_committed: only what committed transactions wrote
        self.records: list[ConsumerRecord[bytes, bytes]] = []
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> TopicReader:
        partitions = await partitions_of(self.bootstrap, self.topic)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, auto_offset_reset="earliest",
                                          isolation_level=self.isolation_level)
        await self._consumer.start()
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def poll(self, timeout_ms: int = 100) -> int:
        """Read what is there now; returns the number of records seen so far."""
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=timeout_ms)
        self.records.extend(record for batch in batches.values() for record in batch)
        return len(self.records)

    async def read_until(self, at_least: int, timeout_s: float) -> list[ConsumerRecord[bytes, bytes]]:
        async def enough() -> bool:
            return await self.poll() >= at_least

        await eventually(enough, timeout_s, f"{at_least} records in {self.topic} (have {len(self.records)})",
                         interval_s=0)
        return self.records

    async def settle(self, quiet_s: float = 1.0) -> list[ConsumerRecord[bytes, bytes]]:
        """Keep reading until nothing new arrives for quiet_s (to see duplicates, if any)."""
        seen = -1
        while seen != len(self.records):
            seen = len(self.records)
            await self.poll(int(quiet_s * 1000))
        return self.records


async def read_all(bootstrap: str, topic: str, *, at_least: int, timeout_s: float = 30.0,
                   quiet_s: float = 0.5) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of a topic, once there are at least ``at_least`` and no more keep coming."""
    async with TopicReader(bootstrap, topic) as reader:
        await reader.read_until(at_least, timeout_s)
        return await reader.settle(quiet_s)


async def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset of each partition (0 where none)."""
    partitions = await partitions_of(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        result = {}
        for tp in partitions:
            result[tp.partition] = await consumer.committed(tp) or 0
    finally:
        await consumer.stop()
    return result


class WorkerProcess:
    """`python -m worker serve` as a real subprocess, logging to a file, with its HTTP port."""

    def __init__(self, env: Mapping[str, str], log_path: Path, args: Sequence[str] = ("--instant-classifier",)):
        self.port = int(env.get("NOTIF_METRICS_PORT") or free_port())  # a test may name the port (a taken one)
        self.env = subprocess_env(**{"NOTIF_METRICS_HOST": "127.0.0.1", "NOTIF_LOG_FORMAT": "json", **env,
                                     "NOTIF_METRICS_PORT": str(self.port)})
        self.args = list(args)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "worker", "serve", *self.args], env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT)
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def get(self, path: str) -> tuple[int, str]:
        """(status, body) of an HTTP GET; (0, error) when nothing answers."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)

    async def status(self, path: str) -> int:
        return (await asyncio.to_thread(self.get, path))[0]

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        async def ready() -> bool:
            assert self.alive, f"worker exited: {self.log_tail()}"
            return await self.status("/readyz") == 200
        await eventually(ready, timeout_s, "worker /readyz == 200")

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def wait_exit(self, timeout_s: float) -> int:
        """The exit code; a worker still running after ``timeout_s`` gets SIGABRT first (faulthandler writes
        every thread's stack into its log) and the test fails showing them."""
        assert self.process is not None
        process = self.process
        try:
            await eventually(lambda: _done(process), timeout_s, "worker exit")
        except AssertionError:
            process.send_signal(signal.SIGABRT)
            await asyncio.to_thread(process.wait, 30)
            raise AssertionError(f"the worker did not exit within {timeout_s}s; its log, with every thread's "
                                 f"stack:\n{self.log_tail(30000)}") from None
        return int(process.returncode)

    def stop(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.kill()
            self.process.wait(10)

    def log_tail(self, size: int = 6000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-size:]

    def events(self) -> list[dict[str, Any]]:
        """The worker's JSON log events (non-JSON lines skipped)."""
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events


async def _done(process: subprocess.Popen[bytes]) -> bool:
    return process.poll() is not None


def librdkafka_produce(bootstrap: str, topic: str, codec: str, ids: list[str], *, idempotent: bool,
                       values: Sequence[tuple[bytes, Sequence[tuple[str, bytes]]]] | None = None) -> None:
    """Write notifications the way most producers in the field do: librdkafka, compressed batches. ``values``:
    (value, headers) per id instead of a flat notification."""
    producer = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 20,
                         "enable.idempotence": idempotent})
    for index, notification_id in enumerate(ids):
        value, headers = (values[index] if values is not None else (json.dumps(
            {"id": notification_id, "title": "Build failed", "body": f"pipeline {notification_id}"}).encode(), []))
        producer.produce(topic, key=notification_id.encode(), value=value, headers=list(headers))
    assert producer.flush(30) == 0, "librdkafka did not deliver everything"


def librdkafka_read(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list[dict[str, object]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{topic}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    seen: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(seen) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                seen.append(json.loads(message.value() or b"null"))
    finally:
        consumer.close()
    return seen


async def alter_topic(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    """Set topic configs (e.g. max.message.bytes) through the admin API (IncrementalAlterConfigs' older twin)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)])
    finally:
        await admin.close()
    for answer in response:  # one response per broker asked
        for resource in answer.resources:
            assert resource[0] == 0, f"the broker refused the topic config {configs}: {resource}"


async def topic_names(bootstrap: str) -> set[str]:
    """Every topic the broker lists (a metadata request for all topics never auto-creates one)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()

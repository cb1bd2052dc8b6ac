"""Apache Kafka as the suite's broker (worker/dev/apache_kafka.py): it answers, keeps idempotence and
transactions, runs its own command-line tools, and stops without leaving anything behind.

Plain aiokafka clients only: what is proved here is the broker the other tests stand on, not the worker.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from worker.dev.apache_kafka import START_TIMEOUT_S, ApacheKafka, lag_table
from worker.dev.broker import create_topics_async

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


async def values(bootstrap: str, topic: str, isolation_level: str, expected: int) -> list[bytes]:
    """Every value of a one-partition topic from the start, read until ``expected`` and a quiet second more."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation_level,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.seek_to_beginning()
        seen: list[bytes] = []
        quiet_polls = 0
        async with asyncio.timeout(30):
            while len(seen) < expected or quiet_polls < 5:
                batch = await consumer.getmany(timeout_ms=200)
                got = [record.value for records in batch.values() for record in records if record.value is not None]
                seen += got
                quiet_polls = 0 if got else quiet_polls + 1
        return seen
    finally:
        await consumer.stop()


async def test_the_broker_answers_metadata_and_creates_topics(apache_kafka: ApacheKafka) -> None:
    assert apache_kafka.running
    assert apache_kafka.startup_s is not None and apache_kafka.startup_s < START_TIMEOUT_S
    assert (apache_kafka.rss_bytes() or 0) > 50 * 2**20, "a JVM broker's resident memory, read from /proc"
    topic = unique("created")
    await create_topics_async(apache_kafka.bootstrap, [topic], partitions=3)
    admin = AIOKafkaAdminClient(bootstrap_servers=apache_kafka.bootstrap)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert [broker["node_id"] for broker in cluster["brokers"]] == [1]
    assert len(described[0]["partitions"]) == 3


async def test_an_idempotent_producer_writes_and_a_read_committed_consumer_reads_it(
        apache_kafka: ApacheKafka) -> None:
    topic = unique("idempotent")
    await create_topics_async(apache_kafka.bootstrap, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=apache_kafka.bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        sent = [f"m{i}".encode() for i in range(20)]
        for value in sent:
            await producer.send(topic, value)
        await producer.flush()
    finally:
        await producer.stop()
    assert await values(apache_kafka.bootstrap, topic, "read_committed", len(sent)) == sent


async def test_a_committed_transaction_is_read_and_an_aborted_one_is_not(apache_kafka: ApacheKafka) -> None:
    topic = unique("transactions")
    await create_topics_async(apache_kafka.bootstrap, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=apache_kafka.bootstrap, transactional_id=unique("tx"))
    await producer.start()
    try:
        for outcome, batch in (("commit", (b"committed-1", b"committed-2")), ("abort", (b"aborted-1", b"aborted-2")),
                               ("commit", (b"committed-3",))):
            await producer.begin_transaction()
            for value in batch:
                await producer.send_and_wait(topic, value)  # on the broker before the transaction ends
            await (producer.commit_transaction() if outcome == "commit" else producer.abort_transaction())
    finally:
        await producer.stop()
    # read_uncommitted sees the aborted records too: they were written, and it is read_committed that hides them.
    everything = await values(apache_kafka.bootstrap, topic, "read_uncommitted", 5)
    assert sorted(everything) == [b"aborted-1", b"aborted-2", b"committed-1", b"committed-2", b"committed-3"]
    assert await values(apache_kafka.bootstrap, topic, "read_committed", 3) == [
        b"committed-1", b"committed-2", b"committed-3"]


async def test_kafka_consumer_groups_describes_a_groups_lag(apache_kafka: ApacheKafka) -> None:
    bootstrap, topic, group = apache_kafka.bootstrap, unique("lagging"), unique("lag")
    await create_topics_async(bootstrap, [topic], partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for partition, count in ((0, 10), (1, 6)):
            for i in range(count):
                await producer.send(topic, f"p{partition}-{i}".encode(), partition=partition)
        await producer.flush()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        await consumer.commit({TopicPartition(topic, 0): 3, TopicPartition(topic, 1): 6})
    finally:
        await consumer.stop()
    run = await asyncio.to_thread(apache_kafka.tool, "kafka-consumer-groups", "--bootstrap-server", bootstrap,
                                  "--describe", "--group", group)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = {int(row["PARTITION"]): (int(row["CURRENT-OFFSET"]), int(row["LOG-END-OFFSET"]), int(row["LAG"]))
            for row in lag_table(run.stdout) if row["TOPIC"] == topic}
    assert rows == {0: (3, 10, 7), 1: (6, 6, 0)}, run.stdout


async def metadata_answers(bootstrap: str) -> bool:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await client.bootstrap()
        return bool(client.cluster.brokers())
    except KafkaError:
        return False
    finally:
        await client.close()


@pytest.mark.slow  # a broker of its own: about 2 to 4 s and 300 MB more
async def test_a_broker_of_its_own_takes_extra_listeners_and_properties_and_stops_clean() -> None:
    kafka = ApacheKafka(listeners={"SECOND": "PLAINTEXT"}, properties={"auto.create.topics.enable": "false"})
    await asyncio.to_thread(kafka.start)
    try:
        pid, folder = kafka.pid, kafka.folder
        assert folder is not None and (folder / "server.log").exists(), "the log4j2 configuration is used"
        assert await metadata_answers(kafka.address("SECOND"))
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1")])
        finally:
            await admin.close()
        configs = {entry[0]: entry[1] for entry in response.resources[0][4]}
        assert configs["auto.create.topics.enable"] == "false"
    finally:
        await asyncio.to_thread(kafka.stop)
    assert not kafka.running and kafka.folder is None
    assert not Path(f"/proc/{pid}").exists() and not folder.exists()
    assert not await metadata_answers(kafka.bootstrap)

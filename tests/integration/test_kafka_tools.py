"""Kafka's own command-line tools as clients of the worker's topics and group (from the broker's jars).

kafka-console-producer writes with each compression codec; kafka-consumer-groups --describe reads the group's
lag, and the worker's notif_consumer_lag must say the same.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from tests.integration.kafka_helpers import Topics, eventually, notification_messages, produce, read_all
from tests.integration.pipeline_helpers import running_worker, settings_for
from worker.dev.apache_kafka import ApacheKafka, lag_table
from worker.dev.instant import InstantClassifier

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]


async def test_kafka_console_producer_with_every_codec_is_classified(
        apache_kafka: ApacheKafka, make_kafka_topics: Callable[..., Awaitable[Topics]]) -> None:
    topics = await make_kafka_topics(partitions=2)
    sent = []
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        lines = [json.dumps({"id": f"{codec}-{i}", "title": "Build failed", "body": f"run {i}"}) for i in range(5)]
        run = await asyncio.to_thread(apache_kafka.tool, "kafka-console-producer", "--bootstrap-server",
                                      apache_kafka.bootstrap, "--topic", topics.input, "--compression-codec", codec,
                                      input_text="\n".join(lines) + "\n")
        assert run.returncode == 0, run.stderr[-2000:]
        sent += [f"{codec}-{i}" for i in range(5)]
    async with running_worker(settings_for(topics, apache_kafka.bootstrap)) as worker:
        outputs = await read_all(apache_kafka.bootstrap, topics.output, at_least=len(sent), timeout_s=60)
        assert worker.metric("notif_dead_letters_total", {"reason": "undecodable_record"}) == 0
    assert sorted(json.loads(r.value)["id"] for r in outputs) == sorted(sent)


async def test_the_worker_lag_metric_says_what_kafka_consumer_groups_says(
        apache_kafka: ApacheKafka, make_kafka_topics: Callable[..., Awaitable[Topics]]) -> None:
    bootstrap = apache_kafka.bootstrap
    topics = await make_kafka_topics(partitions=2)
    await produce(bootstrap, topics.input, notification_messages(10, "a"), partitions=2)
    async with running_worker(settings_for(topics, bootstrap)):  # commits the first 10
        await read_all(bootstrap, topics.output, at_least=10, timeout_s=60)
    await produce(bootstrap, topics.input, notification_messages(30, "b"), partitions=2)
    # A model stuck for minutes on its first batch: nothing more is committed, the lag holds still.
    stuck = settings_for(topics, bootstrap, max_batch_size=2, max_in_flight=2, shutdown_timeout_s=4)
    async with running_worker(stuck, InstantClassifier(delay_s=600)) as worker:
        async def reported() -> bool:
            return sum(worker.metric("notif_consumer_lag", {"topic": topics.input, "partition": str(p)})
                       for p in (0, 1)) == 30

        await eventually(reported, 30, "the worker's lag metric counts the 30 uncommitted records")
        run = await asyncio.to_thread(apache_kafka.tool, "kafka-consumer-groups", "--bootstrap-server", bootstrap,
                                      "--describe", "--group", topics.group)
        assert run.returncode == 0, run.stderr[-2000:]
        rows = {int(row["PARTITION"]): int(row["LAG"]) for row in lag_table(run.stdout)}
        mine = {p: int(worker.metric("notif_consumer_lag", {"topic": topics.input, "partition": str(p)}))
                for p in (0, 1)}
    assert rows == mine == {0: 15, 1: 15}

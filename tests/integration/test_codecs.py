"""Every Kafka codec in and out, with a real librdkafka producer and consumer (confluent-kafka) beside the worker.

A producer's ``compression.type`` must never stop the stream: each codec is read on the normal fetch path,
and the worker's own output is compressed with NOTIF_OUTPUT_COMPRESSION and read back by librdkafka. A worker
without the codec library refuses to start and names it (worker/stream/kafka/codecs.py).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiokafka.structs import TopicPartition

from tests.integration.kafka_helpers import Topics, librdkafka_produce, librdkafka_read, read_all
from tests.integration.pipeline_helpers import Unsure, running_worker, settings_for
from tests.support import subprocess_env
from worker.dev.broker import create_topics_async
from worker.stream.kafka.codecs import CODECS, check_codecs
from worker.stream.kafka.raw_fetch import RawFetcher
from worker.stream.kafka.raw_records import read_batches

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PER_CODEC = 20
CODEC_BITS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def test_every_codec_round_trips_here() -> None:
    assert check_codecs() == dict.fromkeys(CODECS)


async def test_every_producer_codec_is_classified_and_the_output_compressed_is_read_by_librdkafka(
        broker: str, make_topics: Callable[..., Awaitable[Topics]]) -> None:
    topics = await make_topics(partitions=2)
    sent: list[str] = []
    for codec in CODEC_BITS:
        ids = [f"{codec}-{i}" for i in range(PER_CODEC)]
        await asyncio.to_thread(librdkafka_produce, broker, topics.input, codec, ids, idempotent=topics.idempotent)
        sent += ids
    settings = settings_for(topics, broker, output_compression="zstd")
    async with running_worker(settings) as worker:
        outputs = await read_all(broker, topics.output, at_least=len(sent), timeout_s=60)
        assert worker.metric("notif_dead_letters_total", {"reason": "undecodable_record"}) == 0
        assert (await worker.get("/readyz"))[0] == 200
    assert sorted(json.loads(record.value)["id"] for record in outputs) == sorted(sent)
    read_back = await asyncio.to_thread(librdkafka_read, broker, topics.output, len(sent))
    assert sorted(str(result["id"]) for result in read_back) == sorted(sent)
    assert {await batch_codec(settings_for(topics, broker), TopicPartition(topics.output, p)) for p in (0, 1)} == {
        CODEC_BITS["zstd"]}


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "none"])
async def test_the_worker_compresses_everything_it_produces(codec: str, broker: str,
                                                            make_topics: Callable[..., Awaitable[Topics]]) -> None:
    """Results, review records and dead letters leave under NOTIF_OUTPUT_COMPRESSION, and librdkafka reads them."""
    topics = await make_topics(partitions=1)
    review = f"review-{topics.group}"
    await create_topics_async(broker, [review], 1)
    ids = [f"o-{i}" for i in range(10)]
    values: list[tuple[bytes, list[tuple[str, bytes]]]] = [
        (json.dumps({"id": i, "title": "Build failed", "body": f"run {i}"}).encode(), []) for i in ids]
    await asyncio.to_thread(librdkafka_produce, broker, topics.input, "none", [*ids, "bad"],
                            idempotent=topics.idempotent, values=[*values, (b"[]", [])])
    settings = settings_for(topics, broker, output_compression=codec, review_topic=review, review_below=0.9)
    async with running_worker(settings, Unsure()):  # unsure: every result goes to review too
        await read_all(broker, topics.output, at_least=len(ids), timeout_s=60)
        await read_all(broker, review, at_least=len(ids), timeout_s=30)
        await read_all(broker, topics.dlq, at_least=1, timeout_s=30)
    for topic in (topics.output, review, topics.dlq):
        assert await batch_codec(settings, TopicPartition(topic, 0)) == CODEC_BITS[codec], topic
    for topic in (topics.output, review):
        read_back = await asyncio.to_thread(librdkafka_read, broker, topic, len(ids))
        assert sorted(str(result["id"]) for result in read_back) == ids, topic
    assert await asyncio.to_thread(librdkafka_read, broker, topics.dlq, 1) == [[]]  # the dead letter: the input


async def batch_codec(settings: object, partition: TopicPartition) -> int:
    """The compression bits of the partition's first record batch, read raw from the broker."""
    fetcher = RawFetcher(settings)  # type: ignore[arg-type]
    try:
        batches = read_batches(await fetcher.fetch(partition, 0))
    finally:
        await fetcher.close()
    assert batches, f"no record batch in {partition}"
    return batches[0].codec


@pytest.fixture
def without_cramjam(tmp_path: Path) -> Callable[..., dict[str, str]]:
    """The environment of a real process where `import cramjam` fails, as on a machine without aiokafka's codec
    extras."""
    blocked = tmp_path / "blocked"
    (blocked / "cramjam").mkdir(parents=True)
    (blocked / "cramjam" / "__init__.py").write_text("raise ImportError('cramjam is not installed here')\n")

    def env(**settings: str) -> dict[str, str]:
        made = subprocess_env(**settings)
        made["PYTHONPATH"] = f"{blocked}:{made['PYTHONPATH']}"
        return made

    return env


@pytest.mark.parametrize("command", [["serve", "--instant-classifier"], ["produce-demo", "--count", "1"]],
                         ids=["serve", "produce-demo"])
def test_a_worker_without_the_codec_library_refuses_to_start_and_names_it(
        command: list[str], without_cramjam: Callable[..., dict[str, str]]) -> None:
    env = without_cramjam(NOTIF_LOG_FORMAT="json", NOTIF_METRICS_PORT="0",
                          NOTIF_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    run = subprocess.run([sys.executable, "-m", "worker", *command], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 1, run.stdout + run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines() + run.stderr.splitlines() if line.startswith("{")]
    missing = [event for event in events if event["event"] == "codecs_missing"]
    assert missing, run.stdout + run.stderr
    for codec in ("snappy", "lz4", "zstd"):
        assert codec in missing[0]["error"]
    assert "gzip:" not in missing[0]["error"] and "cramjam" in missing[0]["error"]


def test_the_demo_without_the_codec_library_refuses_before_it_starts_a_broker(
        tmp_path: Path, without_cramjam: Callable[..., dict[str, str]]) -> None:
    """The demo checks first: no broker, no producer, no model; one clear line naming the library and the fix."""
    run = subprocess.run([sys.executable, "-m", "worker", "demo", "--model", str(tmp_path / "no-model"),
                          "--metrics-port", "0", "--count", "1"], env=without_cramjam(), capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "broker" not in run.stdout and "loading" not in run.stdout, run.stdout
    assert "demo_failed" not in run.stderr, run.stderr
    assert "cramjam" in run.stderr and "pip install 'aiokafka[lz4,snappy,zstd]'" in run.stderr, run.stderr
    for codec in ("snappy", "lz4", "zstd"):
        assert codec in run.stderr

"""`notif-worker bench pipeline`: the real worker (instant classifier) against a baseline, same broker, same input.

Each repeat produces the same N notifications to a fresh input topic. Each side then reads it with its own
consumer group and output topic, and is timed from its first consumed record to the commit that covers the
last one. Order alternates between repeats; the figures are medians. The sides (``--compare``):
- ``bare`` (default): the real Pipeline (the code `serve` runs, here in this process with InstantClassifier)
  against a bare aiokafka consume -> produce -> commit loop;
- ``delivery``: the Pipeline with NOTIF_DELIVERY=at_least_once against exactly_once (needs transactions:
  without --bootstrap it starts Apache Kafka);
- ``compression``: the Pipeline with each NOTIF_OUTPUT_COMPRESSION, and the bytes of the record batches
  its producer wrote (the output topic's log size on the broker, by DescribeLogDirs; Apache Kafka);
- ``output``: inputs carrying W3C trace headers and one other; the Pipeline carrying them on (the default
  NOTIF_PROPAGATE_HEADERS), carrying none (what it did before), and with NOTIF_OUTPUT_FORMAT=enriched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import struct
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry

from worker.bench.common import (
    PARTITIONS,
    Message,
    add_broker_flags,
    bench_messages,
    broker_address,
    machine,
    write_outputs,
)
from worker.contract import CONTRACT_VERSION
from worker.dev.broker import create_topics_async
from worker.dev.instant import InstantClassifier
from worker.observe.health import HealthState
from worker.observe.logging import configure_logging
from worker.observe.metrics import Metrics
from worker.settings import Settings
from worker.stream.flow.model_calls import InferenceThread
from worker.stream.kafka.clients import KafkaClients
from worker.stream.kafka.options import PRODUCER_LINGER_MS
from worker.stream.kafka.raw_fetch import RawFetcher
from worker.stream.kafka.raw_records import read_batches
from worker.stream.pipeline import Pipeline

POLL_TIMEOUT_MS = 100
BENCH_COMMIT_INTERVAL_MS = 100  # the default 1 s would add up to a second of idle tail to each run
SIDE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class RunTopics:
    """One repeat's topics: a shared input, and an output (plus group) per side."""

    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    @property
    def input(self) -> str:
        return f"bench-raw-{self.suffix}"

    def output(self, side: str) -> str:
        return f"bench-{side}-out-{self.suffix}"

    def group(self, side: str) -> str:
        return f"bench-{side}-{self.suffix}"

    @property
    def dlq(self) -> str:
        return f"bench-dlq-{self.suffix}"

    def all_of(self, sides: Sequence[str]) -> list[str]:
        return [self.input, *(self.output(side) for side in sides), self.dlq]


def register_pipeline(subparsers: Any) -> None:
    parser = subparsers.add_parser("pipeline", help="worker (instant classifier) vs bare aiokafka loop, msgs/s")
    add_broker_flags(parser)
    parser.add_argument("--n", type=int, default=20_000, help="messages per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side (medians are reported)")
    parser.add_argument("--commit-interval-ms", type=int, default=BENCH_COMMIT_INTERVAL_MS,
                        help="the worker's NOTIF_COMMIT_INTERVAL_MS during the run")
    parser.add_argument("--max-batch-size", type=int, help="the worker's NOTIF_MAX_BATCH_SIZE (default: its own)")
    parser.add_argument("--compare", choices=sorted(COMPARISONS), default="bare",
                        help="bare: worker vs a bare aiokafka loop; delivery: at_least_once vs exactly_once; "
                        "compression: each NOTIF_OUTPUT_COMPRESSION; output: inputs with trace headers, carried on "
                        "(default), carried on with enriched output, or not carried")
    parser.add_argument("--plot", help="write a bar chart here (PNG)")
    parser.set_defaults(func=run_pipeline)


# Each comparison's sides: the worker's setting overrides per side (None: the bare loop).
COMPARISONS: dict[str, dict[str, dict[str, Any] | None]] = {
    "bare": {"worker": {}, "bare": None},
    "delivery": {"at_least_once": {"delivery": "at_least_once"}, "exactly_once": {"delivery": "exactly_once"}},
    "compression": {codec: {"output_compression": codec} for codec in ("none", "gzip", "snappy", "lz4", "zstd")},
    "output": {"trace": {}, "none": {"propagate_headers": ""}, "enriched": {"output_format": "enriched"}},
}
# The headers on every input of a comparison (others: none): W3C trace context and baggage, and one that stays.
INPUT_HEADERS: dict[str, list[tuple[str, bytes]]] = {"output": [
    ("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ("tracestate", b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"), ("baggage", b"tenant=acme,region=eu-west-1"),
    ("x-request-id", b"0f2a6c1e-3b7d-4e59-9c84-1d2e3f4a5b6c")]}


def run_pipeline(args: argparse.Namespace) -> int:
    configure_logging("warning")
    kafka = args.compare != "bare" and not args.bootstrap  # transactions and log sizes: Apache Kafka
    report: dict[str, Any] = {"machine": machine(), "compare": args.compare,
                              "broker": args.bootstrap or ("Apache Kafka (single node)" if kafka else "embedded Tansu")}
    print(f"machine: {report['machine']}", file=sys.stderr)
    overrides = {"commit_interval_ms": args.commit_interval_ms, "max_batch_size": args.max_batch_size}
    with broker_address(args.bootstrap, apache_kafka=kafka) as bootstrap:
        report |= asyncio.run(bench_pipeline(bootstrap, n=args.n, repeat=args.repeat,
                                             idempotent=args.idempotent or kafka, overrides=overrides,
                                             sides=COMPARISONS[args.compare],
                                             headers=INPUT_HEADERS.get(args.compare, [])))
    print_pipeline(report)
    write_outputs(report, args, plot_pipeline)
    return 0


async def bench_pipeline(bootstrap: str, *, n: int, repeat: int, idempotent: bool, overrides: Mapping[str, Any],
                         sides: Mapping[str, dict[str, Any] | None] = COMPARISONS["bare"],
                         headers: Sequence[tuple[str, bytes]] = ()) -> dict[str, Any]:
    """Time every side `repeat` times on fresh topics (each input with ``headers``); medians, and the first side's
    ratio to the second."""
    messages = bench_messages(n)
    runs: list[dict[str, Any]] = []
    names = list(sides)
    for index in range(repeat):
        topics = RunTopics()
        await create_topics_async(bootstrap, topics.all_of(names), PARTITIONS)
        ends = await produce_all(bootstrap, topics.input, messages, idempotent=idempotent, headers=headers)
        for side in names if index % 2 == 0 else names[::-1]:
            watch = Stopwatch(ends)
            side_overrides = sides[side]
            if side_overrides is None:
                await time_bare(bootstrap, topics, watch, idempotent=idempotent)
            else:
                await time_worker(worker_settings(bootstrap, topics, idempotent, {**overrides, **side_overrides},
                                                  side), watch)
            outputs = await count_records(bootstrap, topics.output(side), expected=n)
            runs.append({"repeat": index, "side": side, "seconds": round(watch.seconds, 4),
                         "msgs_per_s": round(n / watch.seconds, 1), "cpu_us_per_msg": round(watch.cpu_s / n * 1e6, 1),
                         "outputs": outputs, "output_bytes": await log_bytes(bootstrap, topics.output(side))})
            print(f"  run {index} {side:13s} {n / watch.seconds:9.1f} msgs/s  {runs[-1]['cpu_us_per_msg']:6.1f} "
                  f"CPU us/msg  ({outputs} outputs, {runs[-1]['output_bytes']} bytes)", file=sys.stderr)
    report: dict[str, Any] = {"n": n, "partitions": PARTITIONS, "repeat": repeat, "idempotent": idempotent,
                              "input_headers": [name for name, _ in headers],
                              "worker_settings": {k: v for k, v in overrides.items() if v is not None},
                              "sides": names, "runs": runs}
    for side in names:
        mine = [r for r in runs if r["side"] == side]
        report[f"{side}_msgs_per_s"] = statistics.median(r["msgs_per_s"] for r in mine)
        report[f"{side}_cpu_us_per_msg"] = statistics.median(r["cpu_us_per_msg"] for r in mine)
        report[f"{side}_output_bytes"] = statistics.median(r["output_bytes"] or 0 for r in mine)
    report["ratio"] = round(report[f"{names[0]}_msgs_per_s"] / report[f"{names[1]}_msgs_per_s"], 3)
    return report


async def log_bytes(bootstrap: str, topic: str) -> int | None:
    """The bytes of the topic's record batches as the broker stores them: as the producer sent them (compressed).

    Read raw, batch by batch (worker/stream/kafka/raw_fetch.py); None where the broker answers nothing.
    """
    settings = Settings(kafka_bootstrap_servers=bootstrap)
    fetcher = RawFetcher(settings)
    total = 0
    try:
        for partition in range(PARTITIONS):
            tp, position = TopicPartition(topic, partition), 0
            while data := await fetcher.fetch(tp, position):
                sizes = batch_sizes(data)
                batches = read_batches(data)
                if not batches:
                    break
                total += sum(sizes[:len(batches)])
                position = batches[-1].next_offset
    finally:
        await fetcher.close()
    return total or None


def batch_sizes(data: bytes) -> list[int]:
    """The size of each record batch in a raw record set (12 bytes of offset and length, then the length)."""
    sizes, pos = [], 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">i", data, pos + 8)
        sizes.append(12 + length)
        pos += 12 + length
    return sizes


async def produce_all(bootstrap: str, topic: str, messages: Sequence[Message], *, idempotent: bool,
                      headers: Sequence[tuple[str, bytes]] = ()) -> dict[TopicPartition, int]:
    """Produce round-robin over the partitions, each message with ``headers``; returns each partition's end offset."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=idempotent, linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=key, value=value, partition=index % PARTITIONS,
                                       headers=list(headers))
                   for index, (key, value) in enumerate(messages)]
        ends: dict[TopicPartition, int] = {}
        for metadata in await asyncio.gather(*futures):
            tp = TopicPartition(topic, metadata.partition)
            ends[tp] = max(ends.get(tp, 0), metadata.offset + 1)
        return ends
    finally:
        await producer.stop()


class Stopwatch:
    """From the first consumed record to the commit that reaches every partition's end offset."""

    def __init__(self, ends: Mapping[TopicPartition, int]) -> None:
        self.ends = dict(ends)
        self.first: float | None = None
        self.last: float | None = None
        self.cpu_s = 0.0  # CPU time of this process (all its threads) between the two
        self.done = asyncio.Event()
        self._committed: dict[TopicPartition, int] = {}

    def consumed(self, count: int) -> None:
        if count and self.first is None:
            self.first = time.perf_counter()
            self.cpu_s = -time.process_time()

    def committed(self, positions: Mapping[TopicPartition, int]) -> None:
        self._committed.update(positions)
        if not self.done.is_set() and all(self._committed.get(tp, -1) >= end for tp, end in self.ends.items()):
            self.last = time.perf_counter()
            self.cpu_s += time.process_time()
            self.done.set()

    @property
    def seconds(self) -> float:
        if self.first is None or self.last is None:
            raise RuntimeError(f"the run did not commit every offset within {SIDE_TIMEOUT_S:g} s")
        return self.last - self.first


class TimedClients(KafkaClients):
    """The worker's own Kafka edge, reporting first poll and each commit to a Stopwatch."""

    def __init__(self, settings: Settings, watch: Stopwatch) -> None:
        super().__init__(settings)
        self.watch = watch

    async def poll(self, *, timeout_ms: int,
                   max_records: int) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        batches = await super().poll(timeout_ms=timeout_ms, max_records=max_records)
        self.watch.consumed(sum(len(records) for records in batches.values()))
        return batches

    async def commit(self, positions: dict[TopicPartition, int], *, timeout_s: float) -> None:
        await super().commit(positions, timeout_s=timeout_s)
        self.watch.committed(positions)

    async def commit_transaction(self, tp: TopicPartition, position: int, *, timeout_s: float) -> None:
        await super().commit_transaction(tp, position, timeout_s=timeout_s)
        self.watch.committed({tp: position})


def worker_settings(bootstrap: str, topics: RunTopics, idempotent: bool, overrides: Mapping[str, Any],
                    side: str = "worker") -> Settings:
    return Settings.model_validate({
        "kafka_bootstrap_servers": bootstrap, "input_topic": topics.input, "output_topic": topics.output(side),
        "dlq_topic": topics.dlq, "group_id": topics.group(side), "producer_idempotence": idempotent,
        **{key: value for key, value in overrides.items() if value is not None},
    })


async def time_worker(settings: Settings, watch: Stopwatch) -> None:
    """Run the real Pipeline with InstantClassifier until every offset is committed (or the time is up)."""
    health = HealthState(liveness_timeout_s=60)
    health.model_loaded = True
    thread = InferenceThread()
    pipeline = Pipeline(settings, InstantClassifier(), TimedClients(settings, watch), thread,
                        Metrics(CollectorRegistry()), health)
    stop = asyncio.Event()
    running = asyncio.create_task(pipeline.run(stop))
    try:
        finished = asyncio.create_task(watch.done.wait())
        await asyncio.wait([running, finished], timeout=SIDE_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        finished.cancel()
    finally:
        stop.set()
        await running
        thread.stop()


async def time_bare(bootstrap: str, topics: RunTopics, watch: Stopwatch, *, idempotent: bool) -> None:
    """The minimal loop: getmany -> decode and send each result -> await the acks -> commit."""
    consumer = AIOKafkaConsumer(topics.input, bootstrap_servers=bootstrap, group_id=topics.group("bare"),
                                enable_auto_commit=False, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=idempotent,
                                linger_ms=PRODUCER_LINGER_MS)
    await consumer.start()
    await producer.start()
    deadline = time.monotonic() + SIDE_TIMEOUT_S
    try:
        while not watch.done.is_set() and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
            watch.consumed(sum(len(records) for records in batches.values()))
            if not batches:
                continue
            deliveries = []
            for records in batches.values():
                for record in records:
                    key, value = bare_result(record.key, record.value)
                    deliveries.append(await producer.send(topics.output("bare"), key=key, value=value))
            await asyncio.gather(*deliveries)
            positions = {tp: records[-1].offset + 1 for tp, records in batches.items() if records}
            await consumer.commit(positions)
            watch.committed(positions)
    finally:
        await consumer.stop()
        await producer.stop()


def bare_result(key: bytes | None, value: bytes | None) -> tuple[bytes | None, bytes]:
    """Decode the JSON and build a result of the worker's size, keyed as the worker keys it."""
    document = json.loads(value or b"{}")
    identifier = document.get("id")
    result = {"id": identifier, "folder": "Work", "priority": 2, "priority_label": "medium",
              "confidence": {"folder": 1.0, "priority": 1.0}, "decoding": "constrained", "truncated": False,
              "model": "instant", "contract_version": CONTRACT_VERSION}
    out_key = key or (identifier.encode() if identifier else None)
    return out_key, json.dumps(result, separators=(",", ":")).encode()


async def count_records(bootstrap: str, topic: str, *, expected: int, quiet_ms: int = 500) -> int:
    """Records in a topic, read from the start until `expected` are seen and nothing more comes."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        count, deadline = 0, time.monotonic() + 30
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=quiet_ms if count >= expected else POLL_TIMEOUT_MS,
                                             max_records=10_000)
            arrived = sum(len(records) for records in batches.values())
            if arrived == 0 and count >= expected:
                break
            count += arrived
        return count
    finally:
        await consumer.stop()


def print_pipeline(report: dict[str, Any]) -> None:
    print(f"machine: CPU {report['machine']['cpu']}, GPU {report['machine']['gpu']}; broker {report['broker']}; "
          f"{report['n']} messages, {report['partitions']} partitions, {report['repeat']} runs per side")
    print("| side | msgs/s (median) | runs | CPU us/msg (median) | output bytes (median) |\n|---|---|---|---|---|")
    for side in report["sides"]:
        runs = ", ".join(f"{r['msgs_per_s']:.0f}" for r in report["runs"] if r["side"] == side)
        print(f"| {side} | {report[f'{side}_msgs_per_s']:.0f} | {runs} | {report[f'{side}_cpu_us_per_msg']:.1f} | "
              f"{report[f'{side}_output_bytes'] or 'n/a'} |")
    first, second = report["sides"][:2]
    print(f"ratio {first}/{second} = {report['ratio']:.3f}")


def plot_pipeline(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(report["sides"]) + 3, 4))
    sides = report["sides"]
    medians = [report[f"{side}_msgs_per_s"] for side in sides]
    labels = {"worker": "worker\n(instant classifier)", "bare": "bare aiokafka loop"}
    ax.bar([labels.get(side, side) for side in sides], medians, color=["tab:blue", "tab:gray", "tab:green",
                                                                       "tab:orange", "tab:purple"][:len(sides)])
    for position, side in enumerate(sides):
        points = [r["msgs_per_s"] for r in report["runs"] if r["side"] == side]
        ax.scatter([position] * len(points), points, color="black", s=12, zorder=3)
    ax.set_ylabel("messages / s (median, dots: runs)")
    ax.set_title(f"{sides[0]}/{sides[1]} {report['ratio']:.2f}; {report['n']} msgs; {report['broker']}; "
                 f"{report['machine']['cpu']}", fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)

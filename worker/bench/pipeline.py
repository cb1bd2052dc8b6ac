"""`notif-worker bench pipeline`: the real worker (instant classifier) vs a bare aiokafka loop, same broker, same input.

Each repeat produces the same N notifications to a fresh input topic. The real Pipeline (the code
`serve` runs, here in this process with InstantClassifier) and a bare consume -> produce -> commit
loop then each read it with their own consumer group and output topic, and each is timed from its
first consumed record to the commit that covers the last one. Order alternates between repeats;
the figures are medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
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

    @property
    def all(self) -> list[str]:
        return [self.input, self.output("worker"), self.output("bare"), self.dlq]


def register_pipeline(subparsers: Any) -> None:
    parser = subparsers.add_parser("pipeline", help="worker (instant classifier) vs bare aiokafka loop, msgs/s")
    add_broker_flags(parser)
    parser.add_argument("--n", type=int, default=20_000, help="messages per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side (medians are reported)")
    parser.add_argument("--commit-interval-ms", type=int, default=BENCH_COMMIT_INTERVAL_MS,
                        help="the worker's NOTIF_COMMIT_INTERVAL_MS during the run")
    parser.add_argument("--max-batch-size", type=int, help="the worker's NOTIF_MAX_BATCH_SIZE (default: its own)")
    parser.add_argument("--plot", help="write a bar chart here (PNG)")
    parser.set_defaults(func=run_pipeline)


def run_pipeline(args: argparse.Namespace) -> int:
    configure_logging("warning")
    report: dict[str, Any] = {"machine": machine(), "broker": args.bootstrap or "embedded Tansu"}
    print(f"machine: {report['machine']}", file=sys.stderr)
    overrides = {"commit_interval_ms": args.commit_interval_ms, "max_batch_size": args.max_batch_size}
    with broker_address(args.bootstrap) as bootstrap:
        report |= asyncio.run(bench_pipeline(bootstrap, n=args.n, repeat=args.repeat, idempotent=args.idempotent,
                                             overrides=overrides))
    print_pipeline(report)
    write_outputs(report, args, plot_pipeline)
    return 0


async def bench_pipeline(bootstrap: str, *, n: int, repeat: int, idempotent: bool,
                         overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Time both sides `repeat` times on fresh topics; medians and their ratio."""
    messages = bench_messages(n)
    runs: list[dict[str, Any]] = []
    for index in range(repeat):
        topics = RunTopics()
        await create_topics_async(bootstrap, topics.all, PARTITIONS)
        ends = await produce_all(bootstrap, topics.input, messages, idempotent=idempotent)
        for side in ("worker", "bare") if index % 2 == 0 else ("bare", "worker"):
            watch = Stopwatch(ends)
            if side == "worker":
                await time_worker(worker_settings(bootstrap, topics, idempotent, overrides), watch)
            else:
                await time_bare(bootstrap, topics, watch, idempotent=idempotent)
            outputs = await count_records(bootstrap, topics.output(side), expected=n)
            runs.append({"repeat": index, "side": side, "seconds": round(watch.seconds, 4),
                         "msgs_per_s": round(n / watch.seconds, 1), "cpu_us_per_msg": round(watch.cpu_s / n * 1e6, 1),
                         "outputs": outputs})
            print(f"  run {index} {side:6s} {n / watch.seconds:9.1f} msgs/s  {runs[-1]['cpu_us_per_msg']:6.1f} "
                  f"CPU us/msg  ({outputs} outputs)", file=sys.stderr)
    worker = statistics.median(r["msgs_per_s"] for r in runs if r["side"] == "worker")
    bare = statistics.median(r["msgs_per_s"] for r in runs if r["side"] == "bare")
    cpu = {side: statistics.median(r["cpu_us_per_msg"] for r in runs if r["side"] == side)
           for side in ("worker", "bare")}
    return {"n": n, "partitions": PARTITIONS, "repeat": repeat, "idempotent": idempotent,
            "worker_settings": {k: v for k, v in overrides.items() if v is not None}, "runs": runs,
            "worker_msgs_per_s": worker, "bare_msgs_per_s": bare, "ratio": round(worker / bare, 3),
            "worker_cpu_us_per_msg": cpu["worker"], "bare_cpu_us_per_msg": cpu["bare"]}


async def produce_all(bootstrap: str, topic: str, messages: Sequence[Message], *,
                      idempotent: bool) -> dict[TopicPartition, int]:
    """Produce round-robin over the partitions; returns each partition's end offset."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=idempotent, linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=key, value=value, partition=index % PARTITIONS)
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


def worker_settings(bootstrap: str, topics: RunTopics, idempotent: bool, overrides: Mapping[str, Any]) -> Settings:
    return Settings.model_validate({
        "kafka_bootstrap_servers": bootstrap, "input_topic": topics.input, "output_topic": topics.output("worker"),
        "dlq_topic": topics.dlq, "group_id": topics.group("worker"), "producer_idempotence": idempotent,
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
    print("| side | msgs/s (median) | runs | CPU us/msg (median) |\n|---|---|---|---|")
    for side in ("worker", "bare"):
        runs = ", ".join(f"{r['msgs_per_s']:.0f}" for r in report["runs"] if r["side"] == side)
        print(f"| {side} | {report[f'{side}_msgs_per_s']:.0f} | {runs} | {report[f'{side}_cpu_us_per_msg']:.1f} |")
    print(f"ratio worker/bare = {report['ratio']:.3f}")


def plot_pipeline(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    sides = ["worker", "bare"]
    medians = [report[f"{side}_msgs_per_s"] for side in sides]
    ax.bar(["worker\n(instant classifier)", "bare aiokafka loop"], medians, color=["tab:blue", "tab:gray"])
    for position, side in enumerate(sides):
        points = [r["msgs_per_s"] for r in report["runs"] if r["side"] == side]
        ax.scatter([position] * len(points), points, color="black", s=12, zorder=3)
    ax.set_ylabel("messages / s (median, dots: runs)")
    ax.set_title(f"ratio {report['ratio']:.2f}; {report['n']} msgs; {report['machine']['cpu']}", fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)

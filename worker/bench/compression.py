"""`notif-worker bench compression`: the worker's producer alone per NOTIF_OUTPUT_COMPRESSION, bytes and msgs/s.

Each run hands N results to the producer the worker builds (`producer_options`) through the worker's own
record-batch path (`kafka/batches.send_batches`, as the outbox hands results over, `HAND_OVER` at a time), to a
fresh topic, timed from the first hand-over to the last acknowledgement; CPU is this process's (the codec runs
on the event loop, when a batch is closed). The results are the real result JSON of realistic notifications
(worker/synth): the contract's ClassificationResult with six-digit confidences and a model and adapter name, as
the 4-bit model's results look. Bytes on the wire: the sizes of the topic's record batches as the broker stores
them, read back raw, which are the batches the producer sent (Tansu stores batches as sent; Apache Kafka keeps
the producer's codec). Codec order alternates between repeats; the figures are medians.
`bench pipeline --compare compression` asks the same of the whole worker, where the rest of its work hides
the codec's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

from aiokafka import AIOKafkaProducer, TopicPartition

from worker.bench.common import (
    PARTITIONS,
    add_broker_flags,
    bench_notifications,
    broker_address,
    machine,
    write_outputs,
)
from worker.bench.pipeline import log_bytes
from worker.contract import Confidence
from worker.dev.broker import create_topics_async
from worker.dev.instant import InstantClassifier
from worker.observe.logging import configure_logging
from worker.settings import OutputSettings, Settings
from worker.stream.flow.records import result_key
from worker.stream.kafka.batches import Message, send_batches
from worker.stream.kafka.errors import BrokerUnavailable
from worker.stream.kafka.options import producer_options
from worker.stream.kafka.raw_fetch import RawFetcher

CODECS: tuple[str, ...] = get_args(OutputSettings.model_fields["output_compression"].annotation)
HAND_OVER = 500  # results per send_batches call: at speed the outbox hands over hundreds that finished meanwhile
MODEL_NAME = "Qwen/Qwen3-0.6B+/models/adapters/current"  # what `model` says with an adapter (Classifier._model_name)
ADAPTER_ID = "current@3f9a1c2e"  # <directory>@<8 hex of the weights' sha256> (worker/model/adapters.py)


def register_compression(subparsers: Any) -> None:
    parser = subparsers.add_parser("compression",
                                   help="the worker's producer per NOTIF_OUTPUT_COMPRESSION: bytes on the wire, msgs/s")
    add_broker_flags(parser)
    parser.add_argument("--apache-kafka", action="store_true",
                        help="without --bootstrap, start Apache Kafka instead of the embedded Tansu")
    parser.add_argument("--n", type=int, default=20_000, help="results per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each codec (medians are reported)")
    parser.add_argument("--plot", help="write a bar chart here (PNG)")
    parser.set_defaults(func=run_compression)


def run_compression(args: argparse.Namespace) -> int:
    configure_logging("warning")
    idempotent = args.idempotent or args.apache_kafka
    report: dict[str, Any] = {"machine": machine(), "broker": args.bootstrap or (
        "Apache Kafka (single node)" if args.apache_kafka else "embedded Tansu")}
    print(f"machine: {report['machine']}", file=sys.stderr)
    with broker_address(args.bootstrap, apache_kafka=args.apache_kafka) as bootstrap:
        report |= asyncio.run(bench_compression(bootstrap, n=args.n, repeat=args.repeat, idempotent=idempotent))
    print_compression(report)
    write_outputs(report, args, plot_compression)
    return 0


def bench_results(n: int) -> list[Message]:
    """n results as the worker publishes them (key, JSON value, no headers), the same every run."""
    classifier, rng = InstantClassifier(), random.Random(1234)
    messages: list[Message] = []
    for notification in bench_notifications(n):
        confidence = Confidence(folder=round(rng.uniform(0.5, 1.0), 6), priority=round(rng.uniform(0.4, 1.0), 6))
        result = classifier.answer(notification).model_copy(
            update={"confidence": confidence, "model": MODEL_NAME, "adapter_id": ADAPTER_ID})
        messages.append((result_key(None, notification), result.to_json_bytes(), []))  # a list: aiokafka takes no other
    return messages


async def bench_compression(bootstrap: str, *, n: int, repeat: int, idempotent: bool,
                            codecs: Sequence[str] = CODECS) -> dict[str, Any]:
    """Time every codec `repeat` times on fresh topics; medians, and each codec's bytes against none's."""
    messages = bench_results(n)
    runs: list[dict[str, Any]] = []
    for index in range(repeat):
        for codec in codecs if index % 2 == 0 else codecs[::-1]:
            topic = f"bench-compression-{codec}-{uuid.uuid4().hex[:10]}"
            await create_topics_async(bootstrap, [topic], PARTITIONS)
            await led(bootstrap, topic)
            seconds, cpu_s = await time_codec(bootstrap, topic, codec, messages, idempotent=idempotent)
            wire = await log_bytes(bootstrap, topic) or 0
            runs.append({"repeat": index, "codec": codec, "seconds": round(seconds, 4),
                         "msgs_per_s": round(n / seconds, 1), "cpu_us_per_msg": round(cpu_s / n * 1e6, 2),
                         "wire_bytes": wire})
            print(f"  run {index} {codec:6s} {n / seconds:9.1f} msgs/s  {runs[-1]['cpu_us_per_msg']:6.2f} CPU us/msg  "
                  f"{wire} bytes on the wire", file=sys.stderr)
    report: dict[str, Any] = {
        "n": n, "partitions": PARTITIONS, "repeat": repeat, "idempotent": idempotent, "hand_over": HAND_OVER,
        "value_bytes_per_msg": round(sum(len(value or b"") for _, value, _ in messages) / n, 1),
        "codecs": list(codecs), "runs": runs}
    for codec in codecs:
        mine = [run for run in runs if run["codec"] == codec]
        report[codec] = {key: statistics.median(run[key] for run in mine)
                         for key in ("msgs_per_s", "cpu_us_per_msg", "wire_bytes")}
    for codec in codecs:
        report[codec]["fewer_bytes_than_none"] = round(report["none"]["wire_bytes"] / report[codec]["wire_bytes"], 2)
        report[codec]["cpu_us_per_msg_over_none"] = round(
            report[codec]["cpu_us_per_msg"] - report["none"]["cpu_us_per_msg"], 2)
    return report


async def led(bootstrap: str, topic: str, timeout_s: float = 15.0) -> None:
    """Wait until each partition's leader serves it: a new topic's first produce may otherwise meet
    NotLeaderForPartition on Apache Kafka and time the producer's retry backoff, not its codec."""
    fetcher = RawFetcher(Settings.model_validate({"kafka_bootstrap_servers": bootstrap}))
    deadline = time.monotonic() + timeout_s
    try:
        for partition in range(PARTITIONS):
            while True:
                try:
                    await fetcher.fetch(TopicPartition(topic, partition), 0)
                    break
                except BrokerUnavailable:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
    finally:
        await fetcher.close()


async def time_codec(bootstrap: str, topic: str, codec: str, messages: Sequence[Message], *,
                     idempotent: bool) -> tuple[float, float]:
    """(seconds, CPU seconds) from the first hand-over to the last acknowledgement, with the worker's producer."""
    settings = Settings.model_validate({"kafka_bootstrap_servers": bootstrap, "output_compression": codec,
                                        "producer_idempotence": idempotent})
    producer = AIOKafkaProducer(**producer_options(settings))
    await producer.start()
    try:
        await producer.partitions_for(topic)  # the topic's metadata before the clock starts
        started, cpu = time.perf_counter(), time.process_time()
        sent = []
        for start in range(0, len(messages), HAND_OVER):
            sent += await send_batches(producer, topic, messages[start:start + HAND_OVER])
        await asyncio.gather(*(future for future, _ in sent))
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        await producer.stop()


def print_compression(report: dict[str, Any]) -> None:
    print(f"machine: CPU {report['machine']['cpu']}; broker {report['broker']}; {report['n']} results of "
          f"{report['value_bytes_per_msg']:.0f} bytes, {report['partitions']} partitions, {report['repeat']} runs")
    print("| codec | messages/s (median) | runs | CPU us/message | over none | bytes on the wire | vs none |\n"
          "|---|---|---|---|---|---|---|")
    for codec in report["codecs"]:
        row = report[codec]
        runs = ", ".join(f"{run['msgs_per_s']:,.0f}" for run in report["runs"] if run["codec"] == codec)
        fewer = "1.0" if codec == "none" else f"{row['fewer_bytes_than_none']:.1f}x fewer"
        print(f"| {codec} | {row['msgs_per_s']:,.0f} | {runs} | {row['cpu_us_per_msg']:.2f} | "
              f"{row['cpu_us_per_msg_over_none']:+.2f} | {row['wire_bytes']:,.0f} | {fewer} |")


def plot_compression(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    codecs = report["codecs"]
    fig, (rate, size) = plt.subplots(1, 2, figsize=(9, 3.6))
    rate.bar(codecs, [report[codec]["msgs_per_s"] for codec in codecs], color="tab:blue")
    for position, codec in enumerate(codecs):
        points = [run["msgs_per_s"] for run in report["runs"] if run["codec"] == codec]
        rate.scatter([position] * len(points), points, color="black", s=12, zorder=3)
    rate.set_ylabel("messages / s (median, dots: runs)")
    size.bar(codecs, [report[codec]["wire_bytes"] / report["n"] for codec in codecs], color="tab:green")
    size.set_ylabel("bytes on the wire per message")
    for ax in (rate, size):
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"the worker's producer per NOTIF_OUTPUT_COMPRESSION; {report['n']} results; {report['broker']}; "
                 f"{report['machine']['cpu']}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)

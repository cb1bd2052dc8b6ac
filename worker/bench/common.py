"""What the three benchmarks share: the machine description, the input notifications, the broker, the outputs."""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from worker.contract import Notification, notification_from_fields, valid_answers
from worker.dev.broker import EmbeddedBroker

PARTITIONS = 3
Message = tuple[bytes | None, bytes]


def machine() -> dict[str, str]:
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"cpu": cpu, "gpu": gpu, "torch": torch.__version__, "transformers": transformers.__version__,
            "answers": str(len(valid_answers()))}


def write_outputs(report: dict[str, Any], args: argparse.Namespace,
                  plot_report: Callable[[dict[str, Any], Path], None]) -> None:
    """The --json and --plot outputs every benchmark takes."""
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.plot:
        plot_report(report, Path(args.plot))


def bench_notifications(n: int) -> list[Notification]:
    """Realistic notifications (the trainer's synthetic generator), the same every run."""
    from worker.synth.sampler import iter_raw_notifications

    stream = iter_raw_notifications(seed=1234)
    return [notification_from_fields(next(stream)) for _ in range(n)]


def bench_messages(n: int) -> list[Message]:
    """n realistic notifications as (key, JSON value), keyed by their (unique) id, the same every run."""
    return [(item.id.encode() if item.id else None, item.model_dump_json(exclude_none=True).encode())
            for item in bench_notifications(n)]


def add_broker_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", help="HOST:PORT of a running broker (default: start the embedded one)")
    parser.add_argument("--idempotent", action="store_true",
                        help="idempotent producers (Kafka, Redpanda; the embedded Tansu cannot)")
    parser.add_argument("--json", help="write the results here")


@contextmanager
def broker_address(bootstrap: str | None, *, apache_kafka: bool = False) -> Iterator[str]:
    """The given address, or for the duration an embedded Tansu broker's (Apache Kafka's with ``apache_kafka``)."""
    if bootstrap:
        yield bootstrap
        return
    if apache_kafka:
        from worker.dev.apache_kafka import ApacheKafka

        with ApacheKafka() as kafka:
            yield kafka.bootstrap
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap

"""`notif-worker demo`: the whole pipeline in one process, no Docker: an embedded broker, synthetic input,
the real worker (`serve`), and the results printed as they arrive. Ctrl-C stops it cleanly.

Also registers `produce-demo` (worker/commands/produce_demo.py), the compose stack's synthetic producer.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from worker.commands import produce_demo as demo_producer
from worker.commands.flags import add_model_flags, settings_from_args
from worker.commands.serve import Loader, model_loader, serve
from worker.commands.stopping import EARLY, LOOP_TEARDOWN, PROCESS_EXIT, StopDeadline
from worker.contract import ClassificationResult
from worker.dev.broker import BrokerStartError, EmbeddedBroker, create_topics
from worker.observe.logging import configure_logging
from worker.settings import Settings
from worker.stream.flow.records import REASON_HEADER
from worker.stream.kafka.codecs import CodecMissing, require_codecs
from worker.stream.kafka.options import client_options

EXIT_FAILED = 1
DEMO_LOG_LEVEL = "warning"  # the results are the output; worker logs only when something is wrong
# bitsandbytes warns at import, on CPUs with AVX512-BF16, that it could not fetch an optional faster CPU
# kernel from the Hugging Face hub ("kernels-community"); its built-in kernels run NF4 all the same.
BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_KERNELS_HINT = "kernels-community"
TEXT_COLUMNS = 60

log = structlog.get_logger(__name__)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the whole pipeline without Docker: embedded broker, synthetic notifications, the real worker",
    )
    add_model_flags(parser)
    parser.add_argument("--rate", type=float, default=demo_producer.DEFAULT_RATE,
                        help="synthetic notifications per second (default 5)")
    parser.add_argument("--count", type=int, help="stop after this many results (default: until Ctrl-C)")
    parser.add_argument("--partitions", type=int, default=1, help="partitions of the input topic")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic stream")
    parser.add_argument("--metrics-port", type=int, help="port of /metrics, /healthz, /readyz (NOTIF_METRICS_PORT)")
    parser.set_defaults(func=run)
    demo_producer.register(subparsers)


def run(args: argparse.Namespace) -> int:
    if EARLY.received is not None:  # a stop before anything started: start nothing (no broker, no model)
        print(f"stopped by {EARLY.received} before starting", file=sys.stderr)
        return 0
    settings = settings_from_args(args).with_overrides(
        metrics_port=args.metrics_port,
        log_level=None if "NOTIF_LOG_LEVEL" in os.environ else DEMO_LOG_LEVEL,
    )
    configure_logging(settings.log_level, settings.log_format)
    logging.getLogger(BNB_CPU_LOGGER).addFilter(lambda record: BNB_KERNELS_HINT not in record.getMessage())
    out = sys.stdout
    try:  # before the broker and the demo's producer: serve() would refuse anyway, after both had started
        require_codecs()
    except CodecMissing as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print("starting the embedded Kafka broker (Tansu, in memory) ...", file=out, flush=True)
    try:
        with _sigint_blocked():
            broker = EmbeddedBroker().start()
        with broker:
            # Tansu has no idempotent producer (worker/dev/broker.py).
            settings = settings.with_overrides(kafka_bootstrap_servers=broker.bootstrap, producer_idempotence=False)
            create_topics(broker.bootstrap, [settings.input_topic], partitions=args.partitions)
            create_topics(broker.bootstrap, [settings.output_topic, settings.dlq_topic])
            print(f"broker {broker.bootstrap}; topics {settings.input_topic} ({args.partitions} partitions), "
                  f"{settings.output_topic}, {settings.dlq_topic}", file=out)
            from worker.model.loading import describe_placement  # torch: imported only when a model is loaded

            print(f"loading {settings.model}: {describe_placement(settings)} ...", file=out)
            print(f"metrics: http://localhost:{settings.metrics_port}/metrics  (health: /healthz, /readyz)",
                  file=out, flush=True)
            deadline = StopDeadline(settings.shutdown_timeout_s)
            code = asyncio.run(demo(settings, model_loader(settings), rate=args.rate, count=args.count,
                                    seed=args.seed, out=out, deadline=deadline))
            deadline.arm("stopping the embedded broker")
        deadline.stage(PROCESS_EXIT)
        return code
    except BrokerStartError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return EXIT_FAILED


@contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Block SIGINT while the broker process starts: it inherits the mask and so ignores Ctrl-C.

    Ctrl-C reaches the terminal's whole process group; a broker that died with it would leave the worker
    unable to publish and commit during its graceful stop. We stop the broker ourselves, afterwards.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


async def demo(settings: Settings, load: Loader, *, rate: float, count: int | None, seed: int,
               out: TextIO, deadline: StopDeadline | None = None) -> int:
    """Run producer, worker and printer until Ctrl-C, `count` results, or a failure; the worker's exit code."""
    texts: dict[str, str] = {}
    done = asyncio.Event()
    worker = asyncio.create_task(serve(settings, load, deadline))
    producer = asyncio.create_task(demo_producer.produce_synthetic(
        settings, rate=rate, stop=done, count=count, seed=seed, on_sent=remember_text(texts)))
    printer = asyncio.create_task(print_results(settings, stop=done, count=count, texts=texts, out=out))
    failed = await _supervise(worker, producer, printer)
    code = await worker
    if deadline is not None:
        deadline.arm("stopping the demo's producer and printer")
    done.set()
    printed, _ = await asyncio.gather(printer, producer, return_exceptions=True)
    print(f"stopped after {printed if isinstance(printed, int) else 0} results", file=out, flush=True)
    if deadline is not None:
        deadline.stage(LOOP_TEARDOWN)
    return EXIT_FAILED if failed else code


async def _supervise(worker: asyncio.Task[int], producer: asyncio.Task[int], printer: asyncio.Task[int]) -> bool:
    """Wait until the worker stops (Ctrl-C), or stop it when the printer is done or a helper failed.

    serve() owns SIGINT/SIGTERM and stops gracefully on them; the demo asks for the same stop by sending
    itself SIGTERM, so Ctrl-C and `--count` take one shutdown path. Returns whether a helper failed.
    """
    waiting: set[asyncio.Task[int]] = {worker, producer, printer}
    while worker in waiting:
        finished, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        waiting -= finished
        failure = next((task.exception() for task in finished - {worker} if task.exception()), None)
        if failure is not None:
            log.error("demo_failed", error=repr(failure))
        if worker not in finished and (failure is not None or printer in finished):
            signal.raise_signal(signal.SIGTERM)
            return failure is not None
    return False


def remember_text(texts: dict[str, str]) -> Callable[[dict[str, str]], None]:
    """Keep each sent notification's text by id, so its result line can show what was classified."""

    def remember(notification: dict[str, str]) -> None:
        parts = (notification.get("app"), notification.get("title"), notification.get("body"))
        texts[notification["id"]] = " | ".join(part for part in parts if part)

    return remember


def format_result(value: bytes, texts: dict[str, str]) -> str:
    """One line per result: folder, priority, confidences, and the notification's text."""
    result = ClassificationResult.model_validate_json(value)
    text = texts.pop(result.id or "", "")
    if len(text) > TEXT_COLUMNS:
        text = text[: TEXT_COLUMNS - 1] + "…"
    folder_p = f"{result.confidence.folder:.2f}" if result.confidence.folder is not None else "  - "
    priority_p = f"{result.confidence.priority:.2f}" if result.confidence.priority is not None else "  - "
    return (f"{result.folder:<10} {result.priority} {result.priority_label:<6} "
            f"(p {folder_p}/{priority_p})  {text}")


def _left(count: int | None, printed: int) -> int | None:
    """How many more lines to print (None: no limit)."""
    return None if count is None else count - printed


def format_dead_letter(record: ConsumerRecord[bytes, bytes]) -> str:
    reason = dict(record.headers).get(REASON_HEADER, b"?").decode("utf-8", "replace")
    return f"{'dead-letter':<10} {reason}"


async def print_results(settings: Settings, *, stop: asyncio.Event, count: int | None, texts: dict[str, str],
                        out: TextIO) -> int:
    """Print results and dead letters as they arrive until `count` were printed or `stop` is set."""
    consumer = AIOKafkaConsumer(
        settings.output_topic, settings.dlq_topic, **client_options(settings), group_id=None,
        auto_offset_reset="earliest", enable_auto_commit=False,
    )
    await consumer.start()
    print(f"{'':8}{'folder':<10} priority  (confidence folder/priority)  notification", file=out, flush=True)
    printed = 0
    try:
        while not stop.is_set() and (count is None or printed < count):
            batches = await consumer.getmany(timeout_ms=200)
            for record in [record for records in batches.values() for record in records][:_left(count, printed)]:
                line = (format_result(record.value or b"", texts) if record.topic == settings.output_topic
                        else format_dead_letter(record))
                printed += 1
                print(f"[{printed:>5}] {line}", file=out, flush=True)
    finally:
        await consumer.stop()
    return printed


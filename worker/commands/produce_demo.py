"""`notif-worker produce-demo`: stream synthetic notifications into the input topic at a steady rate.

The compose stack's demo producer runs it so the dashboard moves; `notif-worker demo` (worker/commands/demo.py,
which registers this subcommand too) reuses `produce_synthetic` to feed its embedded broker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from worker.commands.flags import settings_from_args
from worker.observe.logging import configure_logging
from worker.settings import Settings
from worker.stream.kafka.codecs import CodecMissing, require_codecs
from worker.stream.kafka.errors import BrokerUnavailable, PublishFailed, backoff_s, publish_failed
from worker.stream.kafka.options import producer_options

DEFAULT_RATE = 5.0
PROGRESS_EVERY_S = 10.0
MAX_UNCONFIRMED = 1000  # when sending flat out, wait for acknowledgements at least this often

log = structlog.get_logger(__name__)


def register(subparsers: Any) -> None:
    produce = subparsers.add_parser(
        "produce-demo", help="stream synthetic notifications into NOTIF_INPUT_TOPIC at a steady rate"
    )
    produce.add_argument("--rate", type=float, default=DEFAULT_RATE, help="messages per second (default 5)")
    produce.add_argument("--count", type=int, help="stop after this many messages (default: until stopped)")
    produce.add_argument("--seed", type=int, default=0, help="seed of the synthetic stream")
    produce.set_defaults(func=run_produce)


def send_delay_s(index: int, *, rate: float, started: float, now: float) -> float:
    """Seconds to wait before message `index` so that messages leave at `rate` per second on average.

    Pacing against the start time (not the previous send) keeps the average rate exact when a send is slow.
    """
    return max(0.0, started + index / rate - now)


def synthetic_stream(seed: int) -> Iterator[dict[str, str]]:
    """Raw synthetic notifications (JSON-ready dicts with an id), endlessly."""
    from worker.synth.sampler import iter_raw_notifications

    return iter_raw_notifications(seed=seed)


async def start_producer(settings: Settings, stop: asyncio.Event) -> AIOKafkaProducer | None:
    """A started producer, retrying with backoff while the broker is not there yet; None if stopped first."""
    attempt = 0
    while not stop.is_set():
        producer = AIOKafkaProducer(**producer_options(settings))
        try:
            await producer.start()
            return producer
        except (KafkaError, OSError) as exc:
            await producer.stop()
            delay = backoff_s(attempt, settings.retry_backoff_max_s)
            log.warning("broker not reachable, retrying", bootstrap=settings.kafka_bootstrap_servers,
                        error=repr(exc), retry_in_s=delay)
            attempt += 1
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                continue
    return None


async def produce_synthetic(
    settings: Settings,
    *,
    rate: float,
    stop: asyncio.Event,
    count: int | None = None,
    seed: int = 0,
    on_sent: Callable[[dict[str, str]], None] | None = None,
) -> int:
    """Send synthetic notifications to settings.input_topic until `count` are acknowledged or `stop` is set.

    The key is the notification's id. `on_sent` sees each notification the broker acknowledged.
    Returns how many were acknowledged. Raises PublishFailed when the broker rejects a message.
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    producer = await start_producer(settings, stop)
    if producer is None:
        return 0
    sent = 0
    try:
        sent = await _send_paced(producer, settings.input_topic, rate=rate, stop=stop, count=count, seed=seed,
                                 on_sent=on_sent)
    finally:
        await producer.stop()
    return sent


Pending = list[tuple[asyncio.Future[Any], dict[str, str]]]


async def _send_paced(
    producer: AIOKafkaProducer, topic: str, *, rate: float, stop: asyncio.Event, count: int | None, seed: int,
    on_sent: Callable[[dict[str, str]], None] | None,
) -> int:
    started = last_report = time.monotonic()
    pending: Pending = []
    acknowledged = 0
    for index, notification in enumerate(synthetic_stream(seed)):
        if stop.is_set() or (count is not None and index >= count):
            break
        delay = send_delay_s(index, rate=rate, started=started, now=time.monotonic())
        if delay > 0 or len(pending) >= MAX_UNCONFIRMED:
            acknowledged += await _confirm(pending, on_sent)
            try:
                await asyncio.wait_for(stop.wait(), delay)
                break
            except TimeoutError:
                pass
        key, value = notification["id"].encode(), json.dumps(notification, ensure_ascii=False).encode()
        try:
            pending.append((await producer.send(topic, value=value, key=key), notification))
        except KafkaError as exc:
            raise publish_failed(topic, exc) from exc
        if time.monotonic() - last_report >= PROGRESS_EVERY_S:
            last_report = time.monotonic()
            log.info("producing", topic=topic, sent=index + 1,
                     rate_per_s=round((index + 1) / (last_report - started), 1))
    return acknowledged + await _confirm(pending, on_sent)


async def _confirm(pending: Pending, on_sent: Callable[[dict[str, str]], None] | None) -> int:
    """Wait for the broker to acknowledge what is in flight; returns how many were acknowledged."""
    done = 0
    try:
        for delivery, notification in pending:
            await delivery
            done += 1
            if on_sent is not None:
                on_sent(notification)
    except KafkaError as exc:
        raise PublishFailed(f"a synthetic notification was not acknowledged: {exc!r}") from exc
    finally:
        del pending[:done]
    return done


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM set `stop` (the loop then finishes what is in flight) instead of killing us."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def run_produce(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    configure_logging(settings.log_level, settings.log_format)
    try:  # its producer compresses with NOTIF_OUTPUT_COMPRESSION: without the library, a traceback at start
        require_codecs()
    except CodecMissing as exc:
        log.error("codecs_missing", error=str(exc))
        return 1
    return asyncio.run(_produce_main(settings, rate=args.rate, count=args.count, seed=args.seed))


async def _produce_main(settings: Settings, *, rate: float, count: int | None, seed: int) -> int:
    stop = asyncio.Event()
    install_stop_signals(stop)
    log.info("producing synthetic notifications", topic=settings.input_topic, rate_per_s=rate,
             bootstrap=settings.kafka_bootstrap_servers)
    try:
        sent = await produce_synthetic(settings, rate=rate, stop=stop, count=count, seed=seed)
    except (PublishFailed, BrokerUnavailable) as exc:
        log.error("producer failed", error=str(exc))
        return 1
    log.info("producer stopped", sent=sent)
    return 0

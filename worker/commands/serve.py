"""`notif-worker serve`: the streaming worker process (settings, logs, model, HTTP port, signals, pipeline).

Exit codes: 0 stopped by SIGTERM/SIGINT (work in hand finished and committed, or the shutdown timeout
passed with the rest left uncommitted for the next owner; also a signal before anything was consumed);
1 the worker failed (model did not load, HTTP port taken, a codec missing, unexpected error); 2 invalid
settings; 3 the stop itself overran NOTIF_SHUTDOWN_TIMEOUT_S (every thread's stack is in the log:
worker/commands/stopping.py); 130 a second signal forced an immediate exit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Callable
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from worker.commands.flags import add_model_flags, settings_or_none
from worker.commands.stopping import EARLY, LOOP_TEARDOWN, PROCESS_EXIT, StopDeadline
from worker.contract import CONTRACT_VERSION
from worker.dev.instant import InstantClassifier
from worker.observe.health import HealthServer, HealthState
from worker.observe.logging import configure_logging
from worker.observe.metrics import Metrics
from worker.protocol import NotificationClassifier, SwappableClassifier
from worker.settings import Settings
from worker.stream.flow.model_calls import InferenceThread
from worker.stream.kafka.clients import KafkaClients
from worker.stream.kafka.codecs import CodecMissing, require_codecs
from worker.stream.kafka.errors import AuthenticationFailed, KafkaConfigError
from worker.stream.pipeline import Pipeline

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_SETTINGS = 2
EXIT_FORCED = 130

log = structlog.get_logger("worker.commands.serve")

Loader = Callable[[], NotificationClassifier]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve", help="the streaming worker: consume notifications from Kafka, classify, publish results"
    )
    add_model_flags(parser)
    parser.add_argument("--instant-classifier", action="store_true",
                        help="plumbing check: load no model, answer from a hash of the text")
    parser.add_argument("--instant-delay-ms", type=float, default=0.0,
                        help="with --instant-classifier: pretend each model call takes this long")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if (settings := settings_or_none(args)) is None:
        return EXIT_SETTINGS
    configure_logging(settings.log_level, settings.log_format)
    deadline = StopDeadline(settings.shutdown_timeout_s)
    if args.instant_classifier:
        delay_s = args.instant_delay_ms / 1000
        code = asyncio.run(serve(settings, lambda: InstantClassifier(delay_s=delay_s), deadline))
    else:
        code = asyncio.run(serve(settings, model_loader(settings), deadline))
    deadline.arm(PROCESS_EXIT)  # also after a failure before the HTTP port: the exit itself is bounded
    return code


def model_loader(settings: Settings) -> Loader:
    """Load the real classifier (imported here: torch is slow to import and the instant mode needs none)."""

    def load() -> NotificationClassifier:
        from worker.model.classifier import Classifier

        return Classifier.from_settings(settings)

    return load


async def serve(settings: Settings, load: Loader, deadline: StopDeadline | None = None) -> int:
    """Run the worker until a signal stops it; returns the exit code.

    ``deadline``: armed by the first stop request, it ends a stop that overruns (the CLI's; none in-process).
    """
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    health = HealthState(settings.liveness_timeout_s)
    stop = asyncio.Event()
    _handle_signals(stop, deadline)
    try:  # a codec missing here would stop every partition whose producer compresses with it: refuse now
        require_codecs()
    except CodecMissing as exc:
        log.error("codecs_missing", error=str(exc))
        return EXIT_FAILED
    try:
        server = HealthServer(health, registry, host=settings.metrics_host, port=settings.metrics_port)
        await server.start()
    except OSError as exc:
        log.error("http_port_unavailable", port=settings.metrics_port, error=str(exc))
        return EXIT_FAILED
    log.info("http_listening", host=settings.metrics_host, port=server.port)
    thread = InferenceThread()
    try:
        return await _serve(settings, load, thread, metrics, health, stop,
                            deadline.stage if deadline is not None else _unnamed)
    finally:
        if deadline is not None:  # armed here too when nothing asked for the stop (a failure): every exit is bounded
            deadline.arm("model thread and HTTP server: stopping them")
        thread.stop()
        await server.stop()
        if deadline is not None:
            deadline.stage(LOOP_TEARDOWN)


def _unnamed(stage: str) -> None:
    """No stop deadline to name the stages to (serve() in-process)."""


async def _serve(settings: Settings, load: Loader, thread: InferenceThread, metrics: Metrics,
                 health: HealthState, stop: asyncio.Event, on_stage: Callable[[str], None]) -> int:
    if stop.is_set():  # a signal during the imports: load nothing (a load left running would outlive the loop)
        log.info("stopped", during="start-up")
        return EXIT_OK
    health.starting("loading the model")
    try:
        classifier = await _load(thread, load, stop)
    except Exception as exc:
        log.exception("model_load_failed", model=settings.model, error=str(exc))
        return EXIT_FAILED
    if classifier is None:
        log.info("stopped", during="model load")
        return EXIT_OK
    health.started()
    health.model_loaded = True
    # The real model reports where it runs (device, torch and CUDA builds, resolved quantization): a CUDA image
    # on a host whose driver is too old shows up here and in notif_model_info, not as mysteriously slow results.
    runtime: dict[str, str] = getattr(classifier, "runtime", {})
    adapter_id = classifier.adapter_id if isinstance(classifier, SwappableClassifier) else None
    metrics.show_model(**{
        "name": classifier.name, "decoding": settings.decoding, "quantization": settings.quantization,
        "adapter": settings.adapter or "", "adapter_id": adapter_id or "", "device": settings.device,
        "contract_version": CONTRACT_VERSION, **runtime,  # the resolved device wins over the setting
    })
    engine: dict[str, str] = getattr(classifier, "engine_info", {"engine": "none", "reason": "no_model"})
    metrics.engine_info.labels(**engine).set(1)
    log.info("model_loaded", model=classifier.name, engine=engine["engine"], engine_reason=engine["reason"], **runtime)
    try:
        pipeline = Pipeline(settings, classifier, KafkaClients(settings), thread, metrics, health)
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, pipeline.check_adapter)
        await pipeline.run(stop, on_stage)
    except KafkaConfigError as exc:
        log.error("invalid_kafka_settings", error=str(exc))
        return EXIT_SETTINGS
    except AuthenticationFailed as exc:  # the same credentials would be refused again: say so, do not retry
        log.error(exc.event, error=str(exc), fix=exc.fix)
        return EXIT_SETTINGS
    except Exception as exc:
        log.exception("worker_failed", error=str(exc))
        return EXIT_FAILED
    log.info("stopped")
    return EXIT_OK


async def _load(thread: InferenceThread, load: Loader, stop: asyncio.Event) -> NotificationClassifier | None:
    """Load on the inference thread (the thread that will use the model); None if stopped meanwhile."""
    loading = thread.submit(load)
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    await asyncio.wait([loading, stopped], return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not loading.done():
        return None
    return loading.result()


def _handle_signals(stop: asyncio.Event, deadline: StopDeadline | None) -> None:
    """First SIGTERM/SIGINT: graceful stop, within the deadline. Second: exit at once.

    A signal that came before these handlers (during the imports: worker/commands/stopping.py) stops at once.
    """
    loop = asyncio.get_running_loop()

    def on_signal(name: str) -> None:
        if stop.is_set():
            log.warning("forced_exit", signal=name)
            os._exit(EXIT_FORCED)
        log.info("shutdown_requested", signal=name)
        if deadline is not None:
            deadline.arm(f"{name} received; the pipeline's stop not begun (still starting: model load, connect)")
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    if EARLY.received is not None:
        on_signal(EARLY.received)

"""In-process workers for broker tests: the real pipeline, classifiers that fail or doubt on cue, /readyz over HTTP."""

from __future__ import annotations

import asyncio
import io
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from tests.integration.kafka_helpers import Topics
from tests.support import PoisonClassifier  # noqa: F401  (re-exported: the broker tests' poison)
from worker.contract import ClassificationResult, Confidence, Notification
from worker.dev.instant import InstantClassifier
from worker.observe.health import HealthServer, HealthState
from worker.observe.metrics import Metrics
from worker.protocol import NotificationClassifier
from worker.settings import Settings
from worker.stream.flow.model_calls import InferenceThread
from worker.stream.kafka.clients import KafkaClients
from worker.stream.pipeline import Pipeline


def settings_for(topics: Topics, bootstrap: str, **extra: Any) -> Settings:
    """Settings of a worker on these topics (NOTIF_* names without the prefix as keywords)."""
    env = {key.removeprefix("NOTIF_").lower(): value for key, value in topics.env(bootstrap).items()}
    return Settings.model_validate({**env, "commit_interval_ms": 50, "max_wait_ms": 20, **extra})


class Unsure(InstantClassifier):
    """Instant answers with a confidence under the review threshold (NOTIF_REVIEW_BELOW above 0.5)."""

    def answer(self, notification: Notification) -> ClassificationResult:
        result = super().answer(notification)
        return result.model_copy(update={"confidence": Confidence(folder=0.5, priority=0.5)})


@dataclass
class RunningWorker:
    pipeline: Pipeline
    health: HealthState
    registry: CollectorRegistry
    server: HealthServer
    task: asyncio.Task[None]

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value

    async def get(self, path: str) -> tuple[int, str]:
        """(status, body) of a GET on the worker's real HTTP port."""
        return await asyncio.to_thread(_get, f"http://127.0.0.1:{self.server.port}{path}")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@asynccontextmanager
async def running_worker(settings: Settings, classifier: NotificationClassifier | None = None,
                         kafka: KafkaClients | None = None,
                         on_stage: Callable[[str], None] | None = None) -> AsyncIterator[RunningWorker]:
    """A pipeline running on this loop with its HTTP port; stopped (SIGTERM's path) on the way out.

    ``on_stage`` hears the stop's stages (Pipeline.run)."""
    registry = CollectorRegistry()
    health = HealthState(liveness_timeout_s=settings.liveness_timeout_s)
    health.model_loaded = True
    thread = InferenceThread()
    server = await HealthServer(health, registry, host="127.0.0.1", port=0).start()
    pipeline = Pipeline(settings, classifier or InstantClassifier(), kafka or KafkaClients(settings), thread,
                        Metrics(registry), health)
    stop = asyncio.Event()
    stages: list[str] = []

    def heard(stage: str) -> None:
        stages.append(stage)
        if on_stage is not None:
            on_stage(stage)

    task = asyncio.create_task(pipeline.run(stop, heard))
    try:
        yield RunningWorker(pipeline, health, registry, server, task)
    finally:
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), settings.shutdown_timeout_s + 10)
        except TimeoutError:  # a stop that hangs: say where, with every task's stack
            stacks = io.StringIO()
            for other in asyncio.all_tasks():
                other.print_stack(limit=12, file=stacks)
            tasks = stacks.getvalue()
            raise AssertionError(f"the pipeline did not stop in {settings.shutdown_timeout_s + 10}s; "
                                 f"stages: {stages}\n{tasks}") from None
        finally:
            thread.stop()
            await server.stop()

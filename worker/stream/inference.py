"""Inference: the one thread that owns the model, the loop that feeds it batches, and the failure policy of a call.

Every model call (and the model load) runs on one dedicated thread, so the event loop keeps
heartbeating, fetching the next batch and publishing the last while the model works, and a GPU is
only ever driven from one thread. A batch whose call raises (e.g. CUDA out of memory) is halved and
retried; a single notification that still fails becomes an InferenceFailure for the dead-letter topic,
but only while its neighbours (or, in a batch that failed entirely, a probe notification) succeed: a model
that fails everything trips the circuit breaker (worker/stream/breaker.py) and its batch is held and
retried instead. InferenceLoop takes batches from the queue, classifies them there and hands the outcomes
to the outbox.

Exceptions:
    ResultCountMismatch    the classifier returned a different number of results than it was given
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from worker.contract import ClassificationResult, Notification
from worker.observe.health import HealthState
from worker.observe.metrics import Metrics
from worker.protocol import NotificationClassifier
from worker.stream.batch_queue import BatchQueue
from worker.stream.breaker import CircuitBreaker
from worker.stream.outbox import Outbox
from worker.stream.records import INFERENCE_ERROR
from worker.stream.work import Work

T = TypeVar("T")
MAX_ERROR_CHARS = 500
# Classified alone when a whole batch failed: if it succeeds the model works and the failures are the items'.
PROBE = Notification(id="notif-breaker-probe", title="Circuit breaker probe", body="Is the model answering?")

log = structlog.get_logger("worker.inference")


class ResultCountMismatch(RuntimeError):
    """The classifier broke its protocol: one result per notification, in order."""


@dataclass(frozen=True)
class InferenceFailure:
    """A notification the model failed on even alone; ``message`` says what it raised."""

    message: str


Outcome = ClassificationResult | InferenceFailure
_Job = tuple[Callable[[], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


class InferenceThread:
    """A daemon thread running submitted calls one at a time, in order.

    A daemon, so a shutdown deadline can end the process while a model call is still running.
    """

    def __init__(self, name: str = "notif-inference") -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, call: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``call`` on the thread; the future resolves on the caller's event loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((call, future, loop))
        return future

    def stop(self) -> None:
        """Let the thread end after the call it is running (if any)."""
        self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            call, future, loop = job
            try:
                result = call()
            except Exception as exc:
                _resolve(loop, future, None, exc)
            else:
                _resolve(loop, future, result, None)


def _resolve(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any,
             error: Exception | None) -> None:
    def settle() -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    with suppress(RuntimeError):  # the loop is closed: nobody waits for this answer any more
        loop.call_soon_threadsafe(settle)


def _classify_checked(classifier: NotificationClassifier, notifications: list[Notification]
                      ) -> list[ClassificationResult]:
    results = classifier.classify(notifications)
    if len(results) != len(notifications):
        raise ResultCountMismatch(f"{len(results)} results for {len(notifications)} notifications")
    return results


def describe(error: BaseException) -> str:
    """A one-line description of a model error for a dead-letter header."""
    return f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]


async def classify_with_split(
    thread: InferenceThread, classifier: NotificationClassifier, notifications: Sequence[Notification],
    on_error: Callable[[int, BaseException], None],
) -> list[Outcome]:
    """One outcome per notification, in order; ``on_error(batch_size, error)`` hears of every failed call."""
    batch = list(notifications)
    if not batch:
        return []
    try:
        return list(await thread.submit(lambda: _classify_checked(classifier, batch)))
    except Exception as exc:
        on_error(len(batch), exc)
        if len(batch) == 1:
            return [InferenceFailure(describe(exc))]
    middle = len(batch) // 2
    first = await classify_with_split(thread, classifier, batch[:middle], on_error)
    return first + await classify_with_split(thread, classifier, batch[middle:], on_error)


def report_model_failure(metrics: Metrics, size: int, error: BaseException, action: str | None = None) -> None:
    """Count and log one failed model call (a batch of ``size``, or the tokenizer on one notification)."""
    metrics.inference_errors.inc()
    log.warning("inference_failed", batch_size=size, error=describe(error),
                action=action or ("split and retry" if size > 1 else "dead-letter unless all fail"))


class InferenceLoop:
    """Batches from the queue through the model, one at a time; every outcome goes to the outbox."""

    def __init__(self, queue: BatchQueue[Work], thread: InferenceThread, classifier: NotificationClassifier,
                 outbox: Outbox, metrics: Metrics, health: HealthState, breaker: CircuitBreaker,
                 on_served: Callable[[list[tuple[Work, ClassificationResult]]], None] | None = None) -> None:
        self.queue = queue
        self._on_served = on_served  # the shadow adapter hears of every served batch (worker/stream/shadow.py)
        self.thread = thread
        self.classifier = classifier
        self.outbox = outbox
        self.metrics = metrics
        self.health = health
        self.breaker = breaker
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Start no new batch; the loop ends after the one in hand (a held batch is left uncommitted)."""
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            batch = await self.queue.next_batch()
            while batch and not self._stopping.is_set():
                batch = await self.classify(batch)

    async def classify(self, batch: list[Work]) -> list[Work]:
        """Classify a batch and hand its outcomes to the outbox; returns it instead when the model failed it
        entirely (held for a retry after the breaker's wait), [] otherwise."""
        batch = [work for work in batch if not work.state.closed]  # revoked meanwhile: the next owner has them
        if not batch:
            return []
        if self.breaker.open and not await self._probe_works():  # a broken model: don't split the batch again
            self.breaker.failed("the probe failed")
            await self.breaker.wait_before_retry(self._stopping)
            return batch
        outcomes = await self._outcomes(batch)
        if all(isinstance(outcome, InferenceFailure) for outcome in outcomes) and not await self._probe_works():
            failure = outcomes[-1]
            self.breaker.failed(failure.message if isinstance(failure, InferenceFailure) else "")
            await self.breaker.wait_before_retry(self._stopping)
            return batch
        self.breaker.succeeded()
        deliveries, served = [], []
        for work, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, InferenceFailure):
                deliveries.append(self.outbox.dead_letter(work, INFERENCE_ERROR, outcome.message))
            else:
                deliveries.extend(self.outbox.result(work, outcome))
                served.append((work, outcome))
        self.outbox.submit(deliveries)
        if self._on_served is not None:
            self._on_served(served)
        return []

    async def _probe_works(self) -> bool:
        """Whether the model classifies a notification known to be fine (the failed ones' missing neighbour)."""
        try:
            await self.thread.submit(lambda: _classify_checked(self.classifier, [PROBE]))
        except Exception as exc:
            report_model_failure(self.metrics, 1, exc, action="hold the batch (the breaker's probe failed)")
            return False
        return True

    async def _outcomes(self, batch: list[Work]) -> list[Outcome]:
        notifications = [work.notification for work in batch if work.notification is not None]
        padded = len(batch) * max(work.tokens for work in batch)
        self.metrics.batch_size.observe(len(batch))
        self.metrics.batch_tokens.observe(padded)
        self.health.inference_started()
        started = time.perf_counter()
        try:
            outcomes = await classify_with_split(self.thread, self.classifier, notifications, self._failed)
        finally:
            self.health.inference_finished()
        seconds = time.perf_counter() - started
        self.metrics.inference_latency.observe(seconds)
        log.debug("batch", size=len(batch), padded_tokens=padded, seconds=round(seconds, 4),
                  queued=len(self.queue))
        return outcomes

    def _failed(self, size: int, error: BaseException) -> None:
        report_model_failure(self.metrics, size, error)

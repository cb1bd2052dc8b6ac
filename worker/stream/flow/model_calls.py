"""Model calls: the one thread that owns the model, and what a failed call becomes (split, retried, failed alone).

Every model call (and the model load) runs on one dedicated thread, so the event loop keeps heartbeating,
fetching the next batch and publishing the last while the model works, and a GPU is only ever driven from
one thread. A batch whose call raises (e.g. CUDA out of memory) is halved and retried; a single notification
that still fails becomes an InferenceFailure.

Exceptions:
    ResultCountMismatch    the classifier returned a different number of results than it was given
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from worker.contract import ClassificationResult, Notification
from worker.observe.metrics import Metrics
from worker.protocol import NotificationClassifier

T = TypeVar("T")
MAX_ERROR_CHARS = 500

log = structlog.get_logger("worker.inference")
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


def classify_checked(classifier: NotificationClassifier, notifications: list[Notification]
                      ) -> list[ClassificationResult]:
    return checked(classifier.classify(notifications), len(notifications))


def checked(results: list[ClassificationResult], count: int) -> list[ClassificationResult]:
    if len(results) != count:
        raise ResultCountMismatch(f"{len(results)} results for {count} notifications")
    return results


def describe(error: BaseException) -> str:
    """A one-line description of a model error for a dead-letter header."""
    return f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]


async def classify_with_split(
    thread: InferenceThread, classifier: NotificationClassifier, notifications: Sequence[Notification],
    on_error: Callable[[int, BaseException], None], first: Awaitable[list[ClassificationResult]] | None = None,
) -> list[Outcome]:
    """One outcome per notification, in order; ``on_error(batch_size, error)`` hears of every failed call.

    ``first``: the whole batch's results from a call already launched (the pipelined attempt), else one is made.
    """
    batch = list(notifications)
    if not batch:
        return []
    try:
        return list(await (first if first is not None else thread.submit(lambda: classify_checked(classifier, batch))))
    except Exception as exc:
        on_error(len(batch), exc)
        if len(batch) == 1:
            return [InferenceFailure(describe(exc))]
    middle = len(batch) // 2
    first_half = await classify_with_split(thread, classifier, batch[:middle], on_error)
    return first_half + await classify_with_split(thread, classifier, batch[middle:], on_error)


def report_model_failure(metrics: Metrics, size: int, error: BaseException, action: str | None = None) -> None:
    """Count and log one failed model call (a batch of ``size``, or the tokenizer on one notification)."""
    metrics.inference_errors.inc()
    log.warning("inference_failed", batch_size=size, error=describe(error),
                action=action or ("split and retry" if size > 1 else "dead-letter unless all fail"))

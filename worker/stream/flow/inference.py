"""Inference: the loop that feeds batches to the model thread, keeps batches in flight, and decides what fails.

The calls themselves run on the one model thread (worker/stream/flow/model_calls.py), so the event loop
keeps heartbeating, fetching and publishing while the model works. A notification that still fails alone
becomes an InferenceFailure for the dead-letter topic, but only while its neighbours (or, in a batch that
failed entirely, a probe notification) succeed: a model that fails everything trips the circuit breaker
(worker/stream/flow/breaker.py) and its batch is held and retried instead. InferenceLoop takes batches from
the queue, classifies them there and hands the outcomes to the outbox.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from worker.contract import ClassificationResult, Notification
from worker.observe.health import HealthState
from worker.observe.metrics import Metrics
from worker.protocol import NotificationClassifier, launcher
from worker.stream.flow.batch_queue import BatchQueue
from worker.stream.flow.breaker import CircuitBreaker
from worker.stream.flow.model_calls import (
    InferenceFailure,
    InferenceThread,
    Outcome,
    T,
    checked,
    classify_checked,
    classify_with_split,
    report_model_failure,
)
from worker.stream.flow.outbox import Outbox
from worker.stream.flow.records import INFERENCE_ERROR
from worker.stream.flow.work import Work

# Classified alone when a whole batch failed: if it succeeds the model works and the failures are the items'.
PROBE = Notification(id="notif-breaker-probe", title="Circuit breaker probe", body="Is the model answering?")

log = structlog.get_logger("worker.inference")


@dataclass
class Flight:
    """A batch launched on the model: ``results`` resolves when it has been read back (None: not launched,
    the careful way instead: the breaker is open)."""

    batch: list[Work]
    results: asyncio.Future[list[ClassificationResult]] | None = None


def _left_uncommitted(batch: list[Work], why: str) -> None:
    if batch:
        log.info("batch_left_uncommitted", size=len(batch), why=why, note="the next owner classifies it")


def _abandon(taking: asyncio.Task[list[Work]] | None, flights: deque[Flight]) -> None:
    """The loop ends (stopped, or cancelled): a batch already taken is said to be left, a waiting take is
    cancelled, and results nobody reads any more are marked seen (no 'exception was never retrieved')."""
    if taking is not None and taking.done() and not taking.cancelled() and taking.exception() is None:
        _left_uncommitted(taking.result(), "taken as the worker stopped")
    elif taking is not None:
        taking.cancel()
    for flight in flights:
        if flight.results is not None:
            flight.results.add_done_callback(_retrieved)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class InferenceLoop:
    """Batches from the queue through the model; every outcome goes to the outbox, batch by batch in order.

    Up to ``batches_in_flight`` batches are launched and not yet read back: while one computes, the next full
    batch is prepared and launched behind it (a GPU runs them in order), and a reader thread waits for the
    results, so the model never waits for the CPU between two batches. A batch that is not full waits until
    the model is free, as ever. Outcomes are delivered in launch order.
    """

    def __init__(self, queue: BatchQueue[Work], thread: InferenceThread, classifier: NotificationClassifier,
                 outbox: Outbox, metrics: Metrics, health: HealthState, breaker: CircuitBreaker,
                 on_served: Callable[[list[tuple[Work, ClassificationResult]]], None] | None = None,
                 batches_in_flight: int = 2) -> None:
        self.queue = queue
        self._on_served = on_served  # the shadow hears of every served batch (lifecycle/shadow.py)
        self.thread = thread
        self.classifier = classifier
        self._launch = launcher(classifier)
        self.outbox = outbox
        self.metrics = metrics
        self.health = health
        self.breaker = breaker
        self.depth = batches_in_flight
        self._stopping = asyncio.Event()
        self._read_at = 0.0  # when the last batch's results were read (its successor's model time starts there)
        self._last_failed = False  # whether the model failed every item of the last delivered batch

    def stop(self) -> None:
        """Launch no new batch; the loop ends after the ones in flight (a held batch is left uncommitted)."""
        self._stopping.set()

    async def run(self) -> None:
        reader = InferenceThread("notif-readout")  # waits for launched results, so launching never waits
        flights: deque[Flight] = deque()
        taking: asyncio.Task[list[Work]] | None = None
        try:
            while not self._stopping.is_set():
                if taking is None and len(flights) < self.depth:  # busy: only a full batch goes behind
                    taking = asyncio.create_task(self.queue.next_batch(full=bool(flights)))
                head = flights[0].results if flights else None
                await asyncio.wait([f for f in (taking, head) if f is not None], return_when=asyncio.FIRST_COMPLETED)
                if taking is not None and taking.done():
                    batch = [work for work in taking.result() if not work.state.closed]
                    taking = None
                    if batch and not self._stopping.is_set():
                        flights.append(await self._flight(batch, reader))
                    elif batch:
                        _left_uncommitted(batch, "taken as the worker stopped")
                while flights and (flights[0].results is None or flights[0].results.done()):
                    await self._settle(flights.popleft())
                    if not flights and taking is not None and not taking.done():  # the model is free: a
                        taking.cancel()  # partial batch may go now (a waiting next_batch has taken nothing)
                        taking = None
            while flights:  # stopping: the launched batches finish
                await self._settle(flights.popleft())
        finally:
            _abandon(taking, flights)
            reader.stop()

    async def _flight(self, batch: list[Work], reader: InferenceThread) -> Flight:
        """Launch a batch on the inference thread; the reader thread waits for its results."""
        if self.breaker.open:  # a broken model: the careful way (probe first), when its turn comes
            return Flight(batch)
        notifications = self._notifications(batch)
        self._observe(batch)
        call, launched = self.health.inference_started(), time.perf_counter()
        try:
            collect = await self.thread.submit(lambda: self._launch(notifications))
        except Exception as exc:
            results: asyncio.Future[list[ClassificationResult]] = asyncio.get_running_loop().create_future()
            results.set_exception(exc)
        else:
            results = reader.submit(lambda: checked(collect(), len(notifications)))
        results.add_done_callback(lambda _: self._read_back(call, launched))  # its model call ends there
        return Flight(batch, results)

    async def _settle(self, flight: Flight) -> None:
        """Deliver a flight's outcomes. A failed one is split and retried, unless a batch before it failed the
        same way: behind an open breaker it goes the careful way (probe first), and while stopping it is left
        uncommitted rather than split against a broken model."""
        batch: list[Work] = flight.batch
        if flight.results is not None:
            try:
                results = await flight.results
            except Exception as exc:
                if self.breaker.open or (self._stopping.is_set() and self._last_failed):
                    report_model_failure(self.metrics, len(batch), exc, action="behind a failed batch: not split")
                    if self._stopping.is_set():
                        _left_uncommitted(batch, "failed behind a failed batch as the worker stopped")
                else:
                    batch = await self._deliver(batch, await self._timed(classify_with_split(
                        self.thread, self.classifier, self._notifications(batch), self._failed, first=flight.results)))
            else:
                batch = await self._deliver(batch, list(results))
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
        self._observe(batch)
        return await self._deliver(batch, await self._timed(classify_with_split(
            self.thread, self.classifier, self._notifications(batch), self._failed)))

    async def _deliver(self, batch: list[Work], outcomes: list[Outcome]) -> list[Work]:
        """Hand the outcomes to the outbox; returns the batch instead if the model failed it entirely."""
        self._last_failed = all(isinstance(outcome, InferenceFailure) for outcome in outcomes)
        if self._last_failed and not await self._probe_works():
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
            await self.thread.submit(lambda: classify_checked(self.classifier, [PROBE]))
        except Exception as exc:
            report_model_failure(self.metrics, 1, exc, action="hold the batch (the breaker's probe failed)")
            return False
        return True

    @staticmethod
    def _notifications(batch: list[Work]) -> list[Notification]:
        return [work.notification for work in batch if work.notification is not None]

    def _observe(self, batch: list[Work]) -> None:
        padded = len(batch) * max(work.tokens for work in batch)
        self.metrics.batch_size.observe(len(batch))
        self.metrics.batch_tokens.observe(padded)
        log.debug("batch", size=len(batch), padded_tokens=padded, queued=len(self.queue))

    async def _timed(self, calls: Awaitable[T]) -> T:
        """Model calls made here and now (a batch, its split): health sees them running, the histogram their time."""
        call, started = self.health.inference_started(), time.perf_counter()
        try:
            return await calls
        finally:
            self._read_back(call, started)

    def _read_back(self, call: int, launched: float) -> None:
        """A model call's results are in: its time ran from its launch, or from the end of the call before it if
        later (launched behind it, it waited its turn)."""
        self.health.inference_finished(call)
        now = time.perf_counter()
        self.metrics.inference_latency.observe(now - max(launched, self._read_at))
        self._read_at = now

    def _failed(self, size: int, error: BaseException) -> None:
        report_model_failure(self.metrics, size, error)

"""The pipeline's supervisor: wires the parts, connects, starts and watches them, and stops them in order.

The data flows one way: intake (worker/stream/flow/intake.py: poll, backpressure, decode, admit) -> the
batch queue -> inference (worker/stream/flow/inference.py: one batch at a time on the inference thread)
-> outbox (worker/stream/flow/outbox.py: publish, acknowledgements, retries) -> committer
(worker/stream/flow/committer.py: the acknowledged prefix, rebalances); the watcher (worker/stream/watcher.py)
probes the broker and refreshes the gauges beside them. At-least-once: checkpoint order is produce,
confirm, commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import Any

import structlog
from aiokafka.structs import TopicPartition

from worker.observe.health import HealthState
from worker.observe.metrics import Metrics
from worker.protocol import NotificationClassifier
from worker.settings import Settings
from worker.stream.flow.batch_queue import BatchQueue
from worker.stream.flow.breaker import CircuitBreaker
from worker.stream.flow.committer import Committer
from worker.stream.flow.inference import InferenceLoop
from worker.stream.flow.intake import Intake
from worker.stream.flow.model_calls import InferenceThread
from worker.stream.flow.offsets import OffsetTracker
from worker.stream.flow.outbox import Outbox
from worker.stream.flow.work import Work
from worker.stream.kafka.clients import KafkaClients
from worker.stream.kafka.errors import BrokerUnavailable, backoff_s
from worker.stream.lifecycle import parts as lifecycle
from worker.stream.watcher import Watcher

CLOSE_RESERVE_S = 5.0  # of the shutdown timeout, kept for leaving the group and closing the clients

log = structlog.get_logger("worker.pipeline")


def _quiet(stage: str) -> None:
    """No one to tell the stop's stages to (tests, benches)."""


class Pipeline:
    """Consume, classify, publish and commit until stopped; see the module docstring for the guarantees."""

    def __init__(self, settings: Settings, classifier: NotificationClassifier, kafka: KafkaClients,
                 thread: InferenceThread, metrics: Metrics, health: HealthState) -> None:
        self.settings = settings
        self.kafka = kafka
        self.metrics = metrics
        self.health = health
        self.tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self.queue: BatchQueue[Work] = BatchQueue(
            max_size=settings.max_batch_size, max_tokens=settings.max_batch_tokens,
            max_wait_s=settings.max_wait_ms / 1000, tokens=lambda work: work.tokens,
            live=lambda work: not work.state.closed,
        )
        revoking: set[TopicPartition] = set()  # shared: the committer fills it, intake skips its records
        self.halted: set[TopicPartition] = set()  # an input there can be neither read nor published: stays paused
        self.outbox = Outbox(settings, kafka, metrics, health, on_acked=self._acked, on_halt=self._halt)
        self.breaker = CircuitBreaker(failures=settings.breaker_failures, retry_s=settings.breaker_retry_s,
                                      unhealthy_s=settings.breaker_unhealthy_s, metrics=metrics, health=health)
        self.intake = Intake(settings, kafka, classifier, self.tracker, self.queue, self.outbox, metrics, health,
                             revoking, self.halted, self.breaker, on_halt=self.halt)
        self.shadow = lifecycle.shadow(settings, thread, classifier, kafka, metrics)
        self.adapter_watch = lifecycle.adapter_watcher(settings, thread, classifier, metrics)
        self.inference = InferenceLoop(self.queue, thread, classifier, self.outbox, metrics, health, self.breaker,
                                       on_served=self.shadow.after if self.shadow else None,
                                       batches_in_flight=settings.batches_in_flight)
        self.committer = Committer(settings, kafka, self.tracker, self.queue, self.outbox, metrics, health, revoking,
                                   self.halted)
        self.watcher = Watcher(kafka, self.tracker, metrics, health, checks=[self.outbox.show_stall])

    async def run(self, stop: asyncio.Event, on_stage: Callable[[str], None] = _quiet) -> None:
        """Connect (retrying), process until ``stop`` is set, then finish, commit and close in time.

        ``on_stage`` hears each stage of the stop as it begins (the process's stop deadline names the one
        that did not finish: worker/commands/stopping.py).
        """
        if not await self._connect(stop):
            return
        loops = [asyncio.create_task(coro) for coro in (
            self.intake.run(), self.inference.run(), self.committer.run(), self.watcher.run(),
            *([self.adapter_watch.run()] if self.adapter_watch else []))]
        stopped: asyncio.Task[Any] = asyncio.create_task(stop.wait())
        # every task is watched: the four loops here, the outbox's hand-over and redelivery tasks through
        # its failure future; the first unexpected exception stops the worker (exit 1 in serve)
        done, _ = await asyncio.wait([*loops, stopped, self.outbox.failure()], return_when=asyncio.FIRST_COMPLETED)
        failure = next((error for task in done if task is not stopped and not task.cancelled()
                        and (error := task.exception()) is not None), None)
        reserve = min(CLOSE_RESERVE_S, self.settings.shutdown_timeout_s / 4)
        log.info("shutdown_started", crashed=failure is not None)
        # Each stage is bounded by leaving what overruns behind (_within), never by waiting for a cancelled
        # task to end, as asyncio.wait_for does: a close that ignores its cancellation cannot hold the stop.
        try:
            if not await _within(self._finish(loops[0], loops[1], on_stage),
                                 self.settings.shutdown_timeout_s - reserve):
                log.warning("shutdown_deadline_passed", unfinished=self.tracker.in_flight,
                            note="uncommitted input is processed again by the next owner")
        finally:
            if self.shadow is not None:  # its last batches finish or are counted (stage "shutdown")
                on_stage("the shadow's last batches")
                await self.shadow.finish(reserve / 2)
            on_stage("cancelling the pipeline's tasks")
            await _within(_cancel([*loops, stopped, *self.outbox.tasks(),
                                   *(self.shadow.tasks() if self.shadow else [])]), reserve / 4)
            on_stage("leave group: closing the Kafka clients")
            await _within(self.kafka.stop(), reserve / 2)
            on_stage("tokenizer thread: closing intake")
            await _within(self.intake.close(), reserve / 4)
        if failure is not None:
            raise failure

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.committer.on_revoked(revoked)
        for tp in revoked & self.halted:  # the next owner meets the same input and decides for itself
            self.halted.discard(tp)
            self.health.clear_problem(f"halted:{tp.topic}:{tp.partition}")
        self.metrics.halted_partitions.set(len(self.halted))

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.committer.on_assigned(assigned)
        self.watcher.show_assignment(len(assigned))

    def check_adapter(self) -> None:
        """SIGHUP: check where NOTIF_ADAPTER points now (worker/stream/lifecycle/adapter_watch.py)."""
        if self.adapter_watch is not None:
            self.adapter_watch.check_now()

    def _acked(self) -> None:
        self.intake.room_freed()

    def _halt(self, work: Work, reason: str) -> None:
        """Stop a partition whose input can get neither a result nor any dead letter: loudly, never skipping it."""
        self.halt(TopicPartition(work.record.topic, work.record.partition), work.record.offset, reason)

    def halt(self, tp: TopicPartition, offset: int, reason: str) -> None:
        """Stop a partition at an input nothing can be done with (unpublishable, or unreadable): never skip it."""
        log.error("partition_halted", topic=tp.topic, partition=tp.partition, offset=offset,
                  reason=reason, note="nothing past this offset is committed; /readyz fails until it is fixed")
        self.halted.add(tp)
        if tp in self.kafka.assignment():
            self.kafka.pause({tp})
        self.health.set_problem(f"halted:{tp.topic}:{tp.partition}",
                                f"partition {tp.topic}:{tp.partition} halted at offset {offset}: {reason}")
        self.metrics.halted_partitions.set(len(self.halted))

    async def _connect(self, stop: asyncio.Event) -> bool:
        attempt = 0
        while not stop.is_set():
            self.health.beat()
            try:
                if not await _unless_stopped(self.kafka.start(on_revoked=self.on_revoked,
                                                              on_assigned=self.on_assigned), stop):
                    return False  # a signal while connecting (a broker that never answers holds start() 40 s)
            except BrokerUnavailable as exc:
                self.metrics.broker_errors.inc()
                delay = backoff_s(attempt, self.settings.retry_backoff_max_s)
                log.warning("broker_unreachable", error=str(exc), attempt=attempt + 1, retry_in_s=delay)
                attempt += 1
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                continue
            self.health.broker_reachable = True
            log.info("connected", bootstrap=self.settings.kafka_bootstrap_servers,
                     group=self.settings.group_id, input_topic=self.settings.input_topic)
            return True
        return False

    async def _finish(self, intake: asyncio.Task[None], inference: asyncio.Task[None],
                      on_stage: Callable[[str], None]) -> None:
        """Stop fetching, let the batches in flight finish, wait for their acknowledgements, commit."""
        self.intake.stop()
        self.inference.stop()
        dropped = self.queue.close()
        on_stage("draining intake (the last fetch and its token counts)")
        await asyncio.gather(intake, return_exceptions=True)
        on_stage("inference in flight (the batches launched on the model)")
        await asyncio.gather(inference, return_exceptions=True)
        on_stage(f"outbox publish (waiting for the broker's acknowledgements of {self.tracker.in_flight} inputs)")
        await self.outbox.settle()
        on_stage("commit (the acknowledged offsets)")
        committed = await self.committer.commit()
        log.info("shutdown_drained", dropped_unstarted=dropped, committed=committed)


async def _unless_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run ``work`` unless ``stop`` is set first (then cancel it); whether it finished."""
    task = asyncio.create_task(work)
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not task.done():
        await _cancel([task])
        return False
    task.result()  # its error, if any
    return True


async def _within(work: Coroutine[Any, Any, Any], timeout_s: float) -> bool:
    """Run ``work`` for at most ``timeout_s``; whether it finished (its error, if any, is raised). Past the bound it
    is cancelled and left to end by itself: not awaited, so a task that does not end when cancelled holds nothing."""
    task = asyncio.create_task(work)
    done, _ = await asyncio.wait([task], timeout=max(timeout_s, 0.0))
    if not done:
        task.cancel()
        log.warning("shutdown_stage_overran", stage=getattr(work, "__qualname__", repr(work)), bound_s=timeout_s)
        return False
    task.result()
    return True


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

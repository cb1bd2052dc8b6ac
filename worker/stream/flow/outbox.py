"""The outbox: results and dead letters to the producer in order, acknowledgements settle offsets, failures handled.

One publisher task hands everything queued to the producer as record batches per topic and partition;
each record batch's acknowledgement marks its messages' offsets done (worker/stream/flow/offsets.py), or
starts a redelivery task for each, which follows the publish-error policy (worker/stream/flow/publish_policy.py):
retry, a replacement dead letter, or halting the partition. Only acknowledged offsets ever become committable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import structlog
from aiokafka.structs import TopicPartition

from worker.observe.health import HealthState
from worker.observe.metrics import Metrics
from worker.settings import Settings
from worker.stream.flow.denials import report_allowed, report_denied
from worker.stream.flow.messages import Messages
from worker.stream.flow.offsets import PartitionOffsets
from worker.stream.flow.publish_policy import Halt, Replace, Retry, decide
from worker.stream.flow.transaction_gate import TransactionGates
from worker.stream.flow.work import Delivery, Work
from worker.stream.kafka.clients import KafkaClients
from worker.stream.kafka.errors import PublishFailed, TransactionFailed, backoff_s, delivery_error

OnHalt = Callable[[Work, str], None]

log = structlog.get_logger("worker.outbox")


class Outbox(Messages):
    """Builds the messages for Work items (worker/stream/flow/messages.py), publishes them, and tells
    ``on_acked`` whenever offsets got done."""

    def __init__(self, settings: Settings, kafka: KafkaClients, metrics: Metrics, health: HealthState,
                 on_acked: Callable[[], None], on_halt: OnHalt) -> None:
        super().__init__(settings, metrics)
        self.kafka = kafka
        self.health = health
        self._on_acked = on_acked
        self._on_halt = on_halt  # an input nothing can be published for: its partition must stop
        for topic in (settings.output_topic, settings.dlq_topic):  # series at 0 from the start, for rate() and alerts
            metrics.publish_retries.labels(topic=topic)
        self._retrying: dict[int, tuple[str, float]] = {}  # id(task) -> (topic, first failure), redeliveries
        self.acked = asyncio.Event()  # set at every acknowledgement (a drain clears it and waits)
        self._queued: list[Delivery] = []  # not yet handed to the producer
        self._publisher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # the publisher, retries
        # handed to the producer, not yet acknowledged: (topic, when), so a stall inside the producer shows
        self._unconfirmed: dict[asyncio.Future[Any], tuple[str, float]] = {}
        self._failure: asyncio.Future[None] | None = None
        self._denied_topics: set[str] = set()  # topics whose Write ACL the broker denied (denials.py)
        # exactly-once: each input partition's gate into its open transaction (worker/stream/flow/transaction_gate.py)
        self._gates: TransactionGates[Delivery] | None = (
            TransactionGates() if settings.delivery == "exactly_once" else None)

    def failure(self) -> asyncio.Future[None]:
        """Fails with the first unexpected exception of a hand-over or redelivery task (the supervisor waits on it)."""
        if self._failure is None:
            self._failure = asyncio.get_running_loop().create_future()
        return self._failure

    # --- hand-over ---------------------------------------------------------------------------------------

    def submit(self, deliveries: list[Delivery]) -> None:
        """Queue messages for the one publisher task (started when none is running)."""
        self._queued.extend(deliveries)
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.create_task(self._publish())
            self._track(self._publisher)

    @property
    def busy(self) -> bool:
        """Something is queued, being handed over, retried, or waiting for its acknowledgement."""
        return bool(self._queued or self._tasks or self._unconfirmed)

    async def settle(self) -> None:
        """Wait until everything submitted is acknowledged (or its partition is gone)."""
        while self._tasks or self._unconfirmed:  # a failed acknowledgement starts a retry task
            await asyncio.wait({*self._tasks, *self._unconfirmed})

    def tasks(self) -> list[asyncio.Task[None]]:
        """The running hand-over and retry tasks (for cancelling at the shutdown deadline)."""
        return list(self._tasks)

    async def _publish(self) -> None:
        """Hand over everything queued, in order; what arrives meanwhile goes in the next, larger hand-over."""
        while self._queued:
            deliveries, self._queued = self._queued, []
            if self._gates is not None:
                gates = self._gates
                deliveries = [d for d in deliveries if gates.gate(d.work.state).admit(d.work.record.offset, d)]
            await self._send_all(deliveries)

    # --- exactly-once: one transaction per input partition ------------------------------------------------

    def close_transaction(self, state: PartitionOffsets) -> int | None:
        """Close the partition's transaction at the highest input offset handed over; None: nothing in it."""
        assert self._gates is not None
        return self._gates.gate(state).close()

    def reopen_transaction(self, state: PartitionOffsets, *, committed: bool) -> None:
        """Open the partition's transaction again (the next one when ``committed``): what waited is handed over."""
        assert self._gates is not None
        waiting = self._gates.reopen(state, committed=committed, closed=state.closed)
        if waiting and not state.closed:
            self._queued[:0] = waiting
            self.submit([])

    @staticmethod
    def _source(delivery: Delivery) -> TopicPartition:
        return TopicPartition(delivery.work.record.topic, delivery.work.record.partition)

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        """A task ended: anything but a normal end or a cancel is a bug, and fails the worker (never a stranded
        hand-over that only logs "Task exception was never retrieved")."""
        self._tasks.discard(task)
        if task.cancelled() or (error := task.exception()) is None:
            return
        log.error("outbox_task_failed", task=task.get_name(), error=repr(error), exc_info=error)
        failure = self.failure()
        if not failure.done():
            failure.set_exception(error)

    async def _send_all(self, deliveries: list[Delivery]) -> None:
        """Hand messages to the producer as record batches per topic and partition, in order within each.

        A batch settles when its acknowledgement arrives: every message in it is done, or each is retried.
        One callback per record batch: per message, a task or a callback costs more than building the record.
        """
        by_topic: dict[tuple[str, TopicPartition | None], list[Delivery]] = {}
        for delivery in deliveries:  # with exactly-once, by input partition too: each has its own transaction
            source = self._source(delivery) if self._gates is not None else None
            by_topic.setdefault((delivery.topic, source), []).append(delivery)
        for (topic, source), group in by_topic.items():
            try:
                sent = await self.kafka.send_batches(topic, [(d.key, d.value, d.headers) for d in group], source)
            except PublishFailed as exc:
                for delivery in group:
                    self._redeliver_later(delivery, exc)
                continue
            now = time.monotonic()
            for future, members in sent:
                self._unconfirmed[future] = (topic, now)
                future.add_done_callback(partial(self._confirmed, topic, [group[i] for i in members]))

    def _confirmed(self, topic: str, deliveries: list[Delivery], future: asyncio.Future[Any]) -> None:
        self._unconfirmed.pop(future, None)
        error = delivery_error(topic, future)
        if error is not None and self._gates is not None and not error.before_sending:
            self._transaction_lost(topic, deliveries, error)
            return
        if error is not None:  # a batch refused whole for its size: each message first gets a chance alone
            alone_first = error.refused == "too_large" and len(deliveries) > 1
            for delivery in deliveries:
                self._redeliver_later(delivery, error, alone_first=alone_first)
            return
        self._acknowledged(deliveries)

    def _transaction_lost(self, topic: str, deliveries: list[Delivery], error: PublishFailed) -> None:
        """A record batch the broker failed inside a transaction: the transaction can only abort. Fail loudly;
        the partition's next owner reads again from the last committed position (nothing of this is visible)."""
        if all(delivery.work.state.closed for delivery in deliveries):
            return  # a partition already given up: its transaction is gone with it
        if error.denied is not None:  # say which ACL before the process ends (a restart meets it again until granted)
            report_denied(self.health, self.metrics, error.denied)
        failure = self.failure()
        if not failure.done():
            failure.set_exception(TransactionFailed(f"a write to {topic} failed inside a transaction: {error}"))

    # --- redelivery and acknowledgements -----------------------------------------------------------------

    def _redeliver_later(self, delivery: Delivery, error: PublishFailed, *, alone_first: bool = False) -> None:
        if not delivery.work.state.closed:
            self._track(asyncio.create_task(self._redeliver(delivery, error, alone_first)))

    async def _redeliver(self, delivery: Delivery, error: PublishFailed, alone_first: bool = False) -> None:
        """Follow the publish-error policy until the broker has a message for this input, or halt.

        ``alone_first``: the message was refused as part of a record batch over the topic's size limit; sent
        alone it may fit, so that is tried before the policy judges it.
        """
        key = id(asyncio.current_task())
        self._retrying[key] = (delivery.topic, time.monotonic())
        try:
            attempt = 0
            while not delivery.work.state.closed:
                decision = Retry() if alone_first else decide(delivery, error, self.dead_letter)
                alone_first = False
                if isinstance(decision, Halt):
                    self._on_halt(delivery.work, decision.reason)
                    return
                if isinstance(decision, Replace):
                    log.warning("publish_refused", topic=delivery.topic, error=str(error),
                                instead=decision.delivery.kind, to=decision.delivery.topic)
                    delivery = decision.delivery
                elif attempt or error.retriable:  # (a first try alone goes at once)
                    attempt += 1
                    await self._back_off(delivery.topic, error, attempt)
                else:
                    attempt = 1
                try:
                    await self.kafka.publish(delivery.topic, key=delivery.key, value=delivery.value,
                                             headers=delivery.headers, source=self._source(delivery))
                except PublishFailed as exc:
                    if self._gates is not None and not exc.before_sending:
                        self._transaction_lost(delivery.topic, [delivery], exc)
                        return
                    error = exc
                    continue
                self._acknowledged([delivery])
                return
        finally:
            self._retrying.pop(key, None)
            self.show_stall()

    async def _back_off(self, topic: str, error: PublishFailed, attempt: int) -> None:
        self.metrics.broker_errors.inc()
        if error.denied is not None:
            report_denied(self.health, self.metrics, error.denied)
            self._denied_topics.add(topic)
        self.metrics.publish_retries.labels(topic=topic).inc()
        self.show_stall()
        delay = backoff_s(attempt - 1, self.settings.retry_backoff_max_s)
        log.warning("publish_failed", topic=topic, error=str(error), attempt=attempt, retry_in_s=delay)
        await asyncio.sleep(delay)

    def show_stall(self) -> None:
        """Not ready while a topic's oldest redelivery, or oldest hand-over the producer still has not had
        acknowledged (the idempotent producer retries inside aiokafka without telling), passes NOTIF_PUBLISH_STALL_S."""
        now = time.monotonic()
        oldest: dict[str, tuple[float, str]] = {}
        waits = ((self._retrying.values(), "failed"), (self._unconfirmed.values(), "not been acknowledged"))
        for waiting, what in waits:
            for topic, since in waiting:
                if topic not in oldest or since < oldest[topic][0]:
                    oldest[topic] = (since, what)
        for topic in {self.settings.output_topic, self.settings.dlq_topic} | set(oldest):
            since, what = oldest.get(topic, (now, ""))
            if now - since > self.settings.publish_stall_s:
                self.health.set_problem(f"publish:{topic}", f"publishing to {topic} has {what} for {now - since:.0f}s")
            else:
                self.health.clear_problem(f"publish:{topic}")

    def _acknowledged(self, deliveries: list[Delivery]) -> None:
        """The broker has these: mark their offsets done, count them, and wake whoever waits for room."""
        counts: dict[Any, int] = {}
        now = time.time()
        latency = self.metrics.end_to_end_latency
        for delivery in deliveries:
            work = delivery.work
            work.pending -= 1
            if work.pending == 0:  # a result sent for review too is done when both are acknowledged
                work.state.ack(work.record.offset)
            counts[delivery.counter] = counts.get(delivery.counter, 0) + 1
            if delivery.input_ms is not None:
                latency.observe(max(0.0, now - delivery.input_ms / 1000))
        for counter, count in counts.items():
            counter.inc(count)
        if self._denied_topics:  # a topic whose Write was denied took a message: the ACL was granted
            for topic in self._denied_topics & {delivery.topic for delivery in deliveries}:
                report_allowed(self.health, f"topic:{topic}")
                self._denied_topics.discard(topic)
        self.acked.set()
        self._on_acked()

"""The streaming loop: poll, decode, dead-letter, batch, classify on the inference thread, publish, commit.

At-least-once: an offset is committed only when it and every offset before it in its partition have an
acknowledged result or dead letter (worker/stream/offsets.py). Checkpoint order is produce, confirm, commit.
Four tasks share one event loop: fetch (with backpressure), infer (one batch at a time on the
inference thread), commit (every commit interval) and watch (broker probe, gauges). Rebalances run
inside aiokafka's coordinator and call on_revoked / on_assigned below.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog
from aiokafka.structs import ConsumerRecord, TopicPartition

from worker.contract import ClassificationResult, InvalidNotification, Notification, decode_notification
from worker.observe.health import HealthState
from worker.observe.metrics import Metrics
from worker.protocol import NotificationClassifier
from worker.settings import Settings
from worker.stream.batch_queue import BatchQueue
from worker.stream.inference import InferenceFailure, InferenceThread, classify_with_split, describe
from worker.stream.kafka_io import (
    BrokerUnavailable,
    CommitRejected,
    KafkaClients,
    PublishFailed,
    backoff_s,
    delivery_error,
)
from worker.stream.offsets import OffsetTracker, PartitionOffsets
from worker.stream.records import INFERENCE_ERROR, dead_letter_headers, result_key

POLL_TIMEOUT_MS = 100
WATCH_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 3.0
COMMIT_TIMEOUT_S = 10.0
MIN_COMMIT_INTERVAL_S = 0.01
CLOSE_RESERVE_S = 5.0  # of the shutdown timeout, kept for leaving the group and closing the clients

log = structlog.get_logger("worker.stream.pipeline")


@dataclass(eq=False, slots=True)
class Work:
    """One consumed record on its way through the worker."""

    record: ConsumerRecord[bytes, bytes]
    state: PartitionOffsets
    notification: Notification | None = None
    tokens: int = 0


@dataclass(eq=False, slots=True)
class Delivery:
    """A result or dead letter to publish for one Work item, and what to count once the broker has it."""

    work: Work
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    counter: Any  # the labelled Prometheus counter child that counts it (classifications or dead letters)
    input_ms: int | None = None  # a result's input timestamp: its end-to-end latency is observed at the ack


class Pipeline:
    """Consume, classify, publish and commit until stopped; see the module docstring for the guarantees."""

    def __init__(self, settings: Settings, classifier: NotificationClassifier, kafka: KafkaClients,
                 thread: InferenceThread, metrics: Metrics, health: HealthState) -> None:
        self.settings = settings
        self.classifier = classifier
        self.kafka = kafka
        self.thread = thread
        self.metrics = metrics
        self.health = health
        self.tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self.queue: BatchQueue[Work] = BatchQueue(
            max_size=settings.max_batch_size, max_tokens=settings.max_batch_tokens,
            max_wait_s=settings.max_wait_ms / 1000, tokens=lambda work: work.tokens,
            live=lambda work: not work.state.closed,
        )
        self._revoking: set[TopicPartition] = set()
        self._deliveries: set[asyncio.Task[None]] = set()  # batches being handed over, retries
        self._unconfirmed: set[asyncio.Future[Any]] = set()  # handed to the producer, not yet acknowledged
        self._classified: dict[tuple[str, int], Any] = {}
        self._acked = asyncio.Event()
        self._room = asyncio.Event()  # cleared while backpressure waits for in-flight work to halve
        self._room.set()
        self._commit_lock = asyncio.Lock()
        self._outbox: list[Delivery] = []  # results and dead letters not yet handed to the producer
        self._publisher: asyncio.Task[None] | None = None
        self._stopping = False

    # --- lifecycle ---------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Connect (retrying), process until ``stop`` is set, then finish, commit and close in time."""
        if not await self._connect(stop):
            return
        loops = [asyncio.create_task(coro) for coro in
                 (self._fetch_loop(), self._infer_loop(), self._commit_loop(), self._watch_loop())]
        stopped: asyncio.Task[Any] = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*loops, stopped], return_when=asyncio.FIRST_COMPLETED)
        failure = next((error for task in done if task is not stopped and not task.cancelled()
                        and (error := task.exception()) is not None), None)
        reserve = min(CLOSE_RESERVE_S, self.settings.shutdown_timeout_s / 4)
        log.info("shutdown_started", crashed=failure is not None)
        try:
            await asyncio.wait_for(self._finish(loops[0], loops[1]),
                                   self.settings.shutdown_timeout_s - reserve)
        except TimeoutError:
            log.warning("shutdown_deadline_passed", unfinished=self.tracker.in_flight,
                        note="uncommitted input is processed again by the next owner")
        finally:
            await _cancel([*loops, stopped, *self._deliveries])
            with suppress(TimeoutError):
                await asyncio.wait_for(self.kafka.stop(), reserve)
        if failure is not None:
            raise failure

    async def _connect(self, stop: asyncio.Event) -> bool:
        attempt = 0
        while not stop.is_set():
            self.health.beat()
            try:
                await self.kafka.start(on_revoked=self.on_revoked, on_assigned=self.on_assigned)
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

    async def _finish(self, fetch: asyncio.Task[None], infer: asyncio.Task[None]) -> None:
        """Stop fetching, let the batch in hand finish, wait for its acknowledgements, commit."""
        self._stopping = True
        dropped = self.queue.close()
        await asyncio.gather(fetch, infer, return_exceptions=True)
        while self._deliveries or self._unconfirmed:  # a failed acknowledgement starts a retry task
            await asyncio.wait({*self._deliveries, *self._unconfirmed})
        committed = await self._commit()
        log.info("shutdown_drained", dropped_unstarted=dropped, committed=committed)

    # --- fetch -------------------------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        failures = 0
        while not self._stopping:
            self.health.beat()
            capacity = self._apply_backpressure()
            if capacity <= 0 or self.kafka.paused():
                await self._wait_for_room()
                continue
            try:
                batches = await self.kafka.poll(timeout_ms=POLL_TIMEOUT_MS, max_records=max(1, capacity))
            except BrokerUnavailable as exc:
                self.metrics.broker_errors.inc()
                delay = backoff_s(failures, self.settings.retry_backoff_max_s)
                log.warning("fetch_failed", error=str(exc), retry_in_s=delay)
                failures += 1
                await asyncio.sleep(delay)
                continue
            failures = 0
            for partition, records in batches.items() if not self._stopping else ():
                self._accept(partition, records)
            self.metrics.queue_depth.set(len(self.queue))
            self.metrics.in_flight.set(self.tracker.in_flight)

    def _apply_backpressure(self) -> int:
        """Pause all partitions when in-flight work reaches the bound; resume once it is down to half.

        Returns the room left under the bound (the most records the next poll may bring).
        """
        in_flight, bound = self.tracker.in_flight, self.settings.max_in_flight
        assigned, paused = self.kafka.assignment(), self.kafka.paused()
        if in_flight >= bound and assigned - paused:
            log.debug("backpressure_pause", in_flight=in_flight, bound=bound)
            self.kafka.pause(assigned - paused)
        elif paused and in_flight <= bound // 2:
            log.debug("backpressure_resume", in_flight=in_flight, bound=bound)
            self.kafka.resume(paused)
        self.metrics.paused_partitions.set(len(self.kafka.paused()))
        return bound - in_flight

    async def _wait_for_room(self) -> None:
        """While paused: wait until acknowledgements bring in-flight work down to the resume mark.

        Polling instead would sleep a whole poll timeout in a fetch that cannot return anything.
        """
        self._room.clear()
        with suppress(TimeoutError):
            await asyncio.wait_for(self._room.wait(), POLL_TIMEOUT_MS / 1000)

    def _accept(self, partition: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Track one partition's fetched records (in offset order) and admit each."""
        state = self._state_for(partition, records[0].offset) if records else None
        if state is None:
            return  # its partition is being revoked: the next owner reads it again
        self.metrics.messages_consumed.inc(len(records))
        for record in records:
            state.track(record.offset)
            self._admit(Work(record, state))

    def _admit(self, work: Work) -> None:
        """Decode and count tokens, then queue for the model; dead-letter what cannot be classified."""
        try:
            work.notification = decode_notification(work.record.value, max_bytes=self.settings.max_message_bytes)
        except InvalidNotification as exc:
            self._spawn([self._dead_letter(work, exc.reason, exc.message)])
            return
        try:
            work.tokens = self.classifier.count_tokens(work.notification)
        except Exception as exc:  # the tokenizer is part of the model: its failure is an inference error
            self._model_failed(1, exc)
            self._spawn([self._dead_letter(work, INFERENCE_ERROR, describe(exc))])
            return
        self.queue.put(work)

    def _state_for(self, partition: TopicPartition, offset: int) -> PartitionOffsets | None:
        if partition in self._revoking:
            return None
        state = self.tracker.get(partition)
        if state is None:
            return self.tracker.open(partition) if partition in self.kafka.assignment() else None
        if state.next_offset is not None and offset < state.next_offset:
            log.warning("offset_rewound", topic=partition.topic, partition=partition.partition, offset=offset,
                        expected=state.next_offset)
            return self.tracker.open(partition)
        return state

    # --- classify and publish ----------------------------------------------------------------------------

    async def _infer_loop(self) -> None:
        while not self._stopping:
            batch = await self.queue.next_batch()
            if batch:
                await self._classify(batch)

    async def _classify(self, batch: list[Work]) -> None:
        notifications = [work.notification for work in batch if work.notification is not None]
        padded = len(batch) * max(work.tokens for work in batch)
        self.metrics.batch_size.observe(len(batch))
        self.metrics.batch_tokens.observe(padded)
        self.health.inference_started()
        started = time.perf_counter()
        try:
            outcomes = await classify_with_split(self.thread, self.classifier, notifications,
                                                 self._model_failed)
        finally:
            self.health.inference_finished()
        seconds = time.perf_counter() - started
        self.metrics.inference_latency.observe(seconds)
        log.debug("batch", size=len(batch), padded_tokens=padded, seconds=round(seconds, 4),
                  queued=len(self.queue), in_flight=self.tracker.in_flight)
        self._spawn([self._dead_letter(work, INFERENCE_ERROR, outcome.message)
                     if isinstance(outcome, InferenceFailure) else self._result(work, outcome)
                     for work, outcome in zip(batch, outcomes, strict=True)])

    def _model_failed(self, size: int, error: BaseException) -> None:
        self.metrics.inference_errors.inc()
        log.warning("inference_failed", batch_size=size, error=describe(error),
                    action="split and retry" if size > 1 else "dead-letter")

    def _result(self, work: Work, result: ClassificationResult) -> Delivery:
        if result.decoding == "generate_fallback":
            self.metrics.parse_failures.inc()
        assert work.notification is not None
        key = result_key(work.record.key, work.notification)
        counter = self._classified.get((result.folder, result.priority))
        if counter is None:  # labels() is slow enough to matter once per message: keep the children
            counter = self.metrics.classifications.labels(folder=result.folder, priority=str(result.priority))
            self._classified[(result.folder, result.priority)] = counter
        timestamp = work.record.timestamp
        return Delivery(work, self.settings.output_topic, key, result.to_json_bytes(), [], counter,
                        timestamp if timestamp >= 0 else None)

    def _dead_letter(self, work: Work, reason: str, message: str) -> Delivery:
        record = work.record
        log.warning("dead_letter", reason=reason, message=message, topic=record.topic,
                    partition=record.partition, offset=record.offset)
        headers = dead_letter_headers(record.headers, reason=reason, message=message, topic=record.topic,
                                      partition=record.partition, offset=record.offset)
        return Delivery(work, self.settings.dlq_topic, record.key, record.value, headers,
                        self.metrics.dead_letters.labels(reason=reason))

    def _spawn(self, deliveries: list[Delivery]) -> None:
        """Queue messages for the one publisher task (started when none is running)."""
        self._outbox.extend(deliveries)
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.create_task(self._publish())
            self._track(self._publisher)

    async def _publish(self) -> None:
        """Hand over everything queued, in order; what arrives meanwhile goes in the next, larger hand-over."""
        while self._outbox:
            deliveries, self._outbox = self._outbox, []
            await self._send_all(deliveries)

    def _track(self, task: asyncio.Task[None]) -> None:
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _send_all(self, deliveries: list[Delivery]) -> None:
        """Hand messages to the producer as record batches per topic and partition, in order within each.

        A batch settles when its acknowledgement arrives: every message in it is done, or each is retried.
        One callback per record batch: per message, a task or a callback costs more than building the record.
        """
        by_topic: dict[str, list[Delivery]] = {}
        for delivery in deliveries:
            by_topic.setdefault(delivery.topic, []).append(delivery)
        for topic, group in by_topic.items():
            try:
                sent = await self.kafka.send_batches(topic, [(d.key, d.value, d.headers) for d in group])
            except PublishFailed as exc:
                for delivery in group:
                    self._retry(delivery, exc)
                continue
            for future, members in sent:
                self._unconfirmed.add(future)
                future.add_done_callback(partial(self._confirmed, topic, [group[i] for i in members]))

    def _confirmed(self, topic: str, deliveries: list[Delivery], future: asyncio.Future[Any]) -> None:
        self._unconfirmed.discard(future)
        error = delivery_error(topic, future)
        if error is not None:
            for delivery in deliveries:
                self._retry(delivery, error)
            return
        self._acknowledged(deliveries)

    def _retry(self, delivery: Delivery, error: PublishFailed) -> None:
        if not delivery.work.state.closed:
            self._track(asyncio.create_task(self._redeliver(delivery, error)))

    async def _redeliver(self, delivery: Delivery, error: PublishFailed) -> None:
        """Publish with backoff until acknowledged (or the partition is gone); then the offset counts as done."""
        attempt = 0
        while True:
            if delivery.work.state.closed:
                return
            self.metrics.broker_errors.inc()
            delay = backoff_s(attempt, self.settings.retry_backoff_max_s)
            log.warning("publish_failed", topic=delivery.topic, error=str(error), retriable=error.retriable,
                        retry_in_s=delay)
            attempt += 1
            await asyncio.sleep(delay)
            try:
                await self.kafka.publish(delivery.topic, key=delivery.key, value=delivery.value,
                                         headers=delivery.headers)
                break
            except PublishFailed as exc:
                error = exc
        self._acknowledged([delivery])

    def _acknowledged(self, deliveries: list[Delivery]) -> None:
        """The broker has these: mark their offsets done and count them.

        Then wake a drain, and wake the fetch loop once in-flight work is down to half.
        """
        counts: dict[Any, int] = {}
        now = time.time()
        latency = self.metrics.end_to_end_latency
        for delivery in deliveries:
            delivery.work.state.ack(delivery.work.record.offset)
            counts[delivery.counter] = counts.get(delivery.counter, 0) + 1
            if delivery.input_ms is not None:
                latency.observe(max(0.0, now - delivery.input_ms / 1000))
        for counter, count in counts.items():
            counter.inc(count)
        self._acked.set()
        if not self._room.is_set() and self.tracker.in_flight <= self.settings.max_in_flight // 2:
            self._room.set()

    # --- commit and rebalance ----------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        interval = max(self.settings.commit_interval_ms / 1000, MIN_COMMIT_INTERVAL_S)
        while True:
            await asyncio.sleep(interval)
            await self._commit()

    async def _commit(self, partitions: set[TopicPartition] | None = None) -> bool:
        """Commit the acknowledged prefix of owned partitions; False when the broker or group refused."""
        async with self._commit_lock:
            if self.kafka.membership_lost():
                return False  # the partitions may be someone else's already
            owned = self.kafka.assignment()
            due = [(tp, state, position) for tp, position in self.tracker.commits_due(partitions).items()
                   if tp in owned and (state := self.tracker.get(tp)) is not None]
            if not due:
                return True
            try:
                await self.kafka.commit({tp: position for tp, _, position in due}, timeout_s=COMMIT_TIMEOUT_S)
            except (CommitRejected, BrokerUnavailable) as exc:
                self.metrics.commit_failures.inc()
                log.warning("commit_failed", error=str(exc), partitions=len(due))
                return False
            for _, state, position in due:
                state.mark_committed(position)
            self.metrics.commits.inc()
            log.debug("committed", offsets={f"{tp.topic}:{tp.partition}": pos for tp, _, pos in due})
            return True

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Inside the rebalance: finish, publish and commit the revoked partitions' work, within the bound."""
        owned = revoked & set(self.tracker.partitions())
        if not owned:
            return
        lost = self.kafka.membership_lost()
        self._revoking |= owned
        drained = committed = False
        try:
            if not lost:
                drained = await self._drain(owned, self.settings.shutdown_timeout_s)
                committed = await self._commit(owned)
        finally:
            self.tracker.close(owned)
            self._revoking -= owned
            self.queue.prune()
            for tp in owned:
                with suppress(KeyError):
                    self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))
        log.info("partitions_revoked", partitions=_names(owned), lost=lost, drained=drained,
                 committed=committed)

    async def _drain(self, partitions: set[TopicPartition], timeout_s: float) -> bool:
        states = [state for tp in partitions if (state := self.tracker.get(tp)) is not None]
        deadline = time.monotonic() + timeout_s
        while any(state.in_flight for state in states):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._acked.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._acked.wait(), remaining)
        return True

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """After the rebalance: fresh bookkeeping (the consumer restarts from the committed offsets)."""
        for tp in assigned:
            self.tracker.open(tp)
        self._update_assignment(len(assigned))
        log.info("partitions_assigned", partitions=_names(assigned))

    # --- watch -------------------------------------------------------------------------------------------

    async def _watch_loop(self) -> None:
        while True:
            await self._probe()
            self._update_assignment(len(self.kafka.assignment()))
            self._update_lag()
            self.metrics.ready.set(1 if self.health.ready()[0] else 0)
            await asyncio.sleep(WATCH_INTERVAL_S)

    async def _probe(self) -> None:
        try:
            await self.kafka.probe(timeout_s=PROBE_TIMEOUT_S)
        except BrokerUnavailable as exc:
            self.metrics.broker_errors.inc()
            if self.health.broker_reachable:
                log.warning("broker_unreachable", error=str(exc))
            self.health.broker_reachable = False
            return
        if not self.health.broker_reachable:
            log.info("broker_reachable")
        self.health.broker_reachable = True

    def _update_lag(self) -> None:
        for tp in self.tracker.partitions():
            state, high = self.tracker.get(tp), self.kafka.highwater(tp)
            if state is not None and state.next_offset is not None and high is not None:
                lag = max(0, high - state.next_offset)
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)

    def _update_assignment(self, count: int) -> None:
        self.health.assigned_partitions = count
        self.metrics.assigned_partitions.set(count)


def _names(partitions: set[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}:{tp.partition}" for tp in partitions)


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

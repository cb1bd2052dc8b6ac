"""Intake: poll the input topic (with backpressure), decode each record, admit it to the queue or dead-letter it.

Backpressure: when in-flight work reaches NOTIF_MAX_IN_FLIGHT every partition is paused, and resumed once
acknowledgements have brought it down to half. In flight (worker/stream/offsets.py, the one definition):
consumed, and not yet in its partition's acknowledged prefix. Paused, the loop still polls (a poll of
paused partitions returns nothing), so the consumer stays in its group.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress

import structlog
from aiokafka.structs import ConsumerRecord, TopicPartition

from worker.contract import InvalidNotification, decode_notification
from worker.observe.health import HealthState
from worker.observe.metrics import Metrics
from worker.protocol import NotificationClassifier
from worker.settings import Settings
from worker.stream.batch_queue import BatchQueue
from worker.stream.breaker import CircuitBreaker
from worker.stream.inference import describe, report_model_failure
from worker.stream.kafka_io import BrokerUnavailable, KafkaClients, backoff_s
from worker.stream.offsets import OffsetTracker, PartitionOffsets
from worker.stream.outbox import Outbox
from worker.stream.records import INFERENCE_ERROR, oversize
from worker.stream.work import Work

POLL_TIMEOUT_MS = 100

log = structlog.get_logger("worker.intake")


class Intake:
    """The fetch loop: records in, decoded Work on the queue, dead letters to the outbox."""

    def __init__(self, settings: Settings, kafka: KafkaClients, classifier: NotificationClassifier,
                 tracker: OffsetTracker[TopicPartition], queue: BatchQueue[Work], outbox: Outbox,
                 metrics: Metrics, health: HealthState, revoking: set[TopicPartition],
                 halted: set[TopicPartition], breaker: CircuitBreaker) -> None:
        self.settings = settings
        self.kafka = kafka
        self.classifier = classifier
        self.tracker = tracker
        self.queue = queue
        self.outbox = outbox
        self.metrics = metrics
        self.health = health
        self._revoking = revoking  # partitions inside on_revoked: their records are left to the next owner
        self._halted = halted  # partitions stopped by the publish-error policy: never resumed here
        self._breaker = breaker  # while open, every partition stays paused
        self._room = asyncio.Event()  # cleared while backpressure waits for in-flight work to halve
        self._room.set()
        self._stopping = False

    def stop(self) -> None:
        """Fetch nothing more; the loop ends after the poll in hand."""
        self._stopping = True

    def room_freed(self) -> None:
        """Acknowledgements arrived: wake the paused loop once in-flight work is down to half."""
        if not self._room.is_set() and self.tracker.in_flight <= self.settings.max_in_flight // 2:
            self._room.set()

    async def run(self) -> None:
        failures = 0
        while not self._stopping:
            self.health.beat()
            capacity = self._apply_backpressure()
            paused = capacity <= 0 or bool(self.kafka.paused() - self._halted)
            try:
                # Paused, a poll that cannot wait (timeout 0) still counts for max.poll.interval, so the
                # group keeps us however long the model takes; then wait for room instead of in the fetch.
                batches = await self.kafka.poll(timeout_ms=0 if paused else POLL_TIMEOUT_MS,
                                                max_records=max(1, capacity))
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
            if paused:
                await self._wait_for_room()

    def _apply_backpressure(self) -> int:
        """Pause all partitions when in-flight work reaches the bound; resume once it is down to half.

        Returns the room left under the bound (the most records the next poll may bring).
        """
        in_flight, bound, held = self.tracker.in_flight, self.settings.max_in_flight, self._breaker.open
        assigned, paused = self.kafka.assignment(), self.kafka.paused()
        if (in_flight >= bound or held) and assigned - paused:
            log.debug("backpressure_pause", in_flight=in_flight, bound=bound, breaker_open=held)
            self.kafka.pause(assigned - paused)
        elif paused and in_flight <= bound // 2 and not held:
            log.debug("backpressure_resume", in_flight=in_flight, bound=bound)
            self.kafka.resume(paused - self._halted)
        self.metrics.paused_partitions.set(len(self.kafka.paused()))
        return 0 if held else bound - in_flight

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
        record, settings = work.record, self.settings
        too_large = oversize(record.key, record.headers, max_key_bytes=settings.max_key_bytes,
                             max_header_bytes=settings.max_header_bytes)
        if too_large is not None:
            self.outbox.submit([self.outbox.dead_letter(work, "too_large", too_large)])
            return
        try:
            work.notification = decode_notification(work.record.value, max_bytes=self.settings.max_message_bytes)
        except InvalidNotification as exc:
            self.outbox.submit([self.outbox.dead_letter(work, exc.reason, exc.message)])
            return
        try:
            work.tokens = self.classifier.count_tokens(work.notification)
        except Exception as exc:  # the tokenizer is part of the model: its failure is an inference error
            report_model_failure(self.metrics, 1, exc)
            self.outbox.submit([self.outbox.dead_letter(work, INFERENCE_ERROR, describe(exc))])
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

"""Intake: poll the input topic (with backpressure), decode each record, admit it to the queue or dead-letter it.

Backpressure: when in-flight work reaches NOTIF_MAX_IN_FLIGHT every partition is paused, and resumed once
acknowledgements have brought it down to half. In flight (worker/stream/flow/offsets.py, the one definition):
consumed, and not yet in its partition's acknowledged prefix. Paused, the loop still polls (a poll of
paused partitions returns nothing), so the consumer stays in its group.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from contextlib import suppress

import structlog
from aiokafka.structs import ConsumerRecord, TopicPartition

from worker.envelopes.mapping import FieldMapping
from worker.envelopes.read import ENVELOPES, read_notification
from worker.observe.health import HealthState
from worker.observe.metrics import Metrics
from worker.protocol import NotificationClassifier
from worker.settings import Settings
from worker.stream.flow.batch_queue import BatchQueue
from worker.stream.flow.breaker import CircuitBreaker
from worker.stream.flow.denials import report_allowed, report_denied
from worker.stream.flow.model_calls import InferenceThread, describe, report_model_failure
from worker.stream.flow.offsets import OffsetTracker, PartitionOffsets
from worker.stream.flow.outbox import Outbox
from worker.stream.flow.records import INFERENCE_ERROR, UNDECODABLE_RECORD, oversize
from worker.stream.flow.work import Work
from worker.stream.kafka.clients import KafkaClients
from worker.stream.kafka.errors import AccessDenied, BrokerUnavailable, UndecodableFetch, backoff_s
from worker.stream.kafka.raw_fetch import RawFetcher
from worker.stream.kafka.undecodable import Finding, Rewind, Salvaged, examine

POLL_TIMEOUT_MS = 100
OnHalt = Callable[[TopicPartition, int, str], None]  # partition, offset, reason
MAX_UNLOCATED = 3  # undecodable fetches in a row whose bad record the raw read cannot find: then stop

log = structlog.get_logger("worker.intake")


class Intake:
    """The fetch loop: records in, decoded Work on the queue, dead letters to the outbox."""

    def __init__(self, settings: Settings, kafka: KafkaClients, classifier: NotificationClassifier,
                 tracker: OffsetTracker[TopicPartition], queue: BatchQueue[Work], outbox: Outbox,
                 metrics: Metrics, health: HealthState, revoking: set[TopicPartition],
                 halted: set[TopicPartition], breaker: CircuitBreaker, on_halt: OnHalt) -> None:
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
        self._on_halt = on_halt  # a record that can be neither read nor dead-lettered: its partition stops
        self._unlocated = 0
        self._raw = RawFetcher(settings)  # reads what the consumer cannot decode; connects on first use
        self._to_count: list[Work] = []  # admitted, waiting for their token counts (in offset order)
        self._tokenizer: InferenceThread | None = None  # counts them off the event loop; started on first use
        self._mapping = FieldMapping.parse(settings.input_fields)  # a user's own envelope (NOTIF_INPUT_FIELDS)
        self._envelopes = {name: metrics.input_envelopes.labels(envelope=name) for name in ENVELOPES}
        self._denied_at: dict[str, float] = {}  # resource -> when the broker last denied us reading it

    def stop(self) -> None:
        """Fetch nothing more; the loop ends after the poll in hand."""
        self._stopping = True

    async def close(self) -> None:
        await self._raw.close()
        if self._tokenizer is not None:
            self._tokenizer.stop()

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
            except UndecodableFetch as exc:
                await self._recover(exc)
                continue
            except (BrokerUnavailable, AccessDenied) as exc:
                self.metrics.broker_errors.inc()
                if isinstance(exc, AccessDenied):
                    report_denied(self.health, self.metrics, exc)
                    self._denied_at[exc.resource] = time.monotonic()
                delay = backoff_s(failures, self.settings.retry_backoff_max_s)
                log.warning("fetch_failed", error=str(exc), retry_in_s=delay)
                failures += 1
                await asyncio.sleep(delay)
                continue
            failures = 0
            if self._denied_at:
                self._denials_over()
            for partition, records in batches.items() if not self._stopping else ():
                self._accept(partition, records)
            await self._count_and_queue()
            self.metrics.queue_depth.set(len(self.queue))
            self.metrics.in_flight.set(self.tracker.in_flight)
            if paused:
                await self._wait_for_room()

    def _denials_over(self) -> None:
        """A poll went through: the group's denial is over once partitions are assigned (joining takes Read on
        the group); any denial is over once it has not come back for two of the longest backoffs."""
        hold_s = 2 * self.settings.retry_backoff_max_s + 1
        for resource, when in list(self._denied_at.items()):
            if (resource.startswith("group:") and self.kafka.assignment()) or time.monotonic() - when > hold_s:
                report_allowed(self.health, resource)
                del self._denied_at[resource]

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

    def _accept(self, partition: TopicPartition, records: list[ConsumerRecord[bytes, bytes]],
                undecodable: Mapping[int, str] | None = None) -> None:
        """Track one partition's fetched records (in offset order) and admit each; dead-letter the undecodable."""
        state = self._state_for(partition, records[0].offset) if records else None
        if state is None:
            return  # its partition is being revoked: the next owner reads it again
        self.metrics.messages_consumed.inc(len(records))
        now = time.monotonic()
        for record in records:
            state.track(record.offset, now)
            if undecodable and record.offset in undecodable:
                work = Work(record, state)
                self.outbox.submit([self.outbox.dead_letter(work, UNDECODABLE_RECORD, undecodable[record.offset])])
            else:
                self._admit(Work(record, state))

    def _admit(self, work: Work) -> None:
        """Decode, then hand over for counting and queueing (_count_and_queue); dead-letter what cannot be decoded."""
        record, settings = work.record, self.settings
        too_large = oversize(record.key, record.headers, max_key_bytes=settings.max_key_bytes,
                             max_header_bytes=settings.max_header_bytes)
        if too_large is not None:
            self.outbox.submit([self.outbox.dead_letter(work, "too_large", too_large)])
            return
        read = read_notification(record.value, record.headers, max_bytes=settings.max_message_bytes,
                                 mapping=self._mapping)
        self._envelopes[read.envelope].inc()
        if read.error is not None:
            self.outbox.submit([self.outbox.dead_letter(work, read.error.reason, read.error.message)])
            return
        work.notification, work.source = read.notification, read.source
        self._to_count.append(work)

    async def _count_and_queue(self) -> None:
        """Count the admitted notifications' tokens off the event loop, then queue them in order.

        Tokenizing is the one costly step of intake: a hostile 64 KB message takes over a second on a loaded
        machine. On the tokenizer thread it costs the event loop (heartbeats, publishing, the model's hand-over)
        at most one tokenizer call at a time instead of the whole fetch. A tokenizer failure is an inference
        error: that notification is dead-lettered.
        """
        works, self._to_count = self._to_count, []
        if not works:
            return
        if self._tokenizer is None:
            self._tokenizer = InferenceThread("notif-tokenize")
        counted = await self._tokenizer.submit(lambda: [_tokens(self.classifier, work) for work in works])
        for work, tokens in zip(works, counted, strict=True):
            if isinstance(tokens, Exception):  # the tokenizer is part of the model: its failure is an inference error
                report_model_failure(self.metrics, 1, tokens)
                self.outbox.submit([self.outbox.dead_letter(work, INFERENCE_ERROR, describe(tokens))])
            else:
                work.tokens = tokens
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

    # --- records the client cannot decode (worker/stream/kafka/undecodable.py) ----------------------------------

    async def _recover(self, error: UndecodableFetch) -> None:
        """Rewind every fetched partition to what we accepted, then find the bad records and settle them."""
        log.error("undecodable_fetch", error=str(error))
        partitions = sorted(self.kafka.assignment() - self.kafka.paused(), key=lambda tp: (tp.topic, tp.partition))
        positions = {tp: await self._position(tp) for tp in partitions}
        for tp, position in positions.items():  # before any other poll: aiokafka dropped what it had taken
            self.kafka.seek(tp, position)
        try:
            findings = {tp: await examine(self._raw, tp, position) for tp, position in positions.items()}
        except BrokerUnavailable as exc:  # rewound already: the next poll meets the record again, and we retry
            self.metrics.broker_errors.inc()
            log.warning("undecodable_fetch_unexamined", error=str(exc))
            await asyncio.sleep(backoff_s(self._unlocated, self.settings.retry_backoff_max_s))
            return
        located = [self._settle(tp, finding) for tp, finding in findings.items()]
        await self._count_and_queue()
        self._unlocated = 0 if any(located) else self._unlocated + 1
        if self._unlocated >= MAX_UNLOCATED:
            for tp, position in positions.items():
                self._stop(tp, position, f"the client cannot decode a record here ({error}); a raw read finds none")
        elif self._unlocated:
            await asyncio.sleep(backoff_s(self._unlocated, self.settings.retry_backoff_max_s))

    async def _position(self, partition: TopicPartition) -> int:
        """One past the last record accepted from the partition, or where its assignment began (retried)."""
        state = self.tracker.get(partition)
        if state is not None and state.next_offset is not None:
            return state.next_offset
        attempt = 0
        while True:
            try:
                return await self.kafka.start_position(partition)
            except BrokerUnavailable as exc:
                self.metrics.broker_errors.inc()
                log.warning("start_position_failed", error=str(exc))
                await asyncio.sleep(backoff_s(attempt, self.settings.retry_backoff_max_s))
                attempt += 1

    def _settle(self, partition: TopicPartition, finding: Finding) -> bool:
        """Act on what the raw read found; whether it found the bad record."""
        if isinstance(finding, Rewind):
            return False
        if isinstance(finding, Salvaged):
            self._accept(partition, finding.records, finding.undecodable)
            self.kafka.seek(partition, finding.resume_at)  # past the bad batch: the client would decode it again
            return True
        self._accept(partition, finding.records)
        self._stop(partition, finding.offset, finding.reason)
        return True

    def _stop(self, partition: TopicPartition, offset: int, reason: str) -> None:
        """Read the partition no further: nothing there can be classified or dead-lettered (not ready, loudly)."""
        self._on_halt(partition, offset, reason)


def _tokens(classifier: NotificationClassifier, work: Work) -> int | Exception:
    """The notification's prompt tokens, or what the tokenizer raised (on the tokenizer thread)."""
    assert work.notification is not None
    try:
        return classifier.count_tokens(work.notification)
    except Exception as exc:
        return exc

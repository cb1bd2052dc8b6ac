"""The messages the outbox publishes for a Work item: its result (and review record), or its dead letter."""

from __future__ import annotations

from typing import Any

import structlog

from worker.contract import ClassificationResult
from worker.observe.metrics import Metrics
from worker.settings import Settings
from worker.stream.flow.publish_policy import DEAD_LETTER
from worker.stream.flow.records import dead_letter_headers, enriched_value, header_names, propagated, result_key
from worker.stream.flow.review import review_reason, review_value
from worker.stream.flow.work import Delivery, Work

log = structlog.get_logger("worker.outbox")


class Messages:
    """Builds Deliveries: keys, values (result or enriched input), the headers carried over, the counters."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._classified: dict[tuple[str, int], Any] = {}
        self._propagate = header_names(settings.propagate_headers)  # copied onto results and review records
        self._enriched = settings.output_format == "enriched"

    def result(self, work: Work, result: ClassificationResult) -> list[Delivery]:
        """The result's message, and its review record when it needs a person (worker/stream/flow/review.py)."""
        if result.decoding == "generate_fallback":
            self.metrics.parse_failures.inc()
        assert work.notification is not None
        key = result_key(work.record.key, work.notification)
        reason = review_reason(result, self.settings.review_below) if self.settings.review_topic else None
        if reason is None:
            return [self._result(work, result, key)]
        result = result.model_copy(update={"review": True})
        work.pending += 1
        review = Delivery(work, self.settings.review_topic or "", key, review_value(result, work.notification),
                          propagated(work.record.headers, self._propagate), self.metrics.reviews.labels(reason=reason))
        return [self._result(work, result, key), review]

    def _result(self, work: Work, result: ClassificationResult, key: bytes | None) -> Delivery:
        counter = self._classified.get((result.folder, result.priority))
        if counter is None:  # labels() is slow enough to matter once per message: keep the children
            counter = self.metrics.classifications.labels(folder=result.folder, priority=str(result.priority))
            self._classified[(result.folder, result.priority)] = counter
        timestamp = work.record.timestamp
        if self._enriched:
            assert work.source is not None  # intake keeps it with every notification it reads
            value = enriched_value(work.source, result.to_json_bytes())
        else:
            value = result.to_json_bytes()
        return Delivery(work, self.settings.output_topic, key, value, propagated(work.record.headers, self._propagate),
                        counter, timestamp if timestamp >= 0 else None)

    def dead_letter(self, work: Work, reason: str, message: str) -> Delivery:
        record = work.record
        log.warning("dead_letter", reason=reason, message=message, topic=record.topic,
                    partition=record.partition, offset=record.offset)
        headers = dead_letter_headers(record.headers, reason=reason, message=message, topic=record.topic,
                                      partition=record.partition, offset=record.offset)
        return Delivery(work, self.settings.dlq_topic, record.key, record.value, headers,
                        self.metrics.dead_letters.labels(reason=reason), kind=DEAD_LETTER)

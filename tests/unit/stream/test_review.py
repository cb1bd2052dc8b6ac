"""Review routing: which results go to a person, the review record, and the two-publication ack rule."""

from __future__ import annotations

import json

import pytest
from aiokafka.structs import ConsumerRecord

from worker.contract import ClassificationResult, Confidence, Notification
from worker.stream.offsets import PartitionOffsets
from worker.stream.review import review_reason, review_value
from worker.stream.work import Work


def result(folder: float | None, priority: float | None) -> ClassificationResult:
    return ClassificationResult(id="n1", folder="Work", priority=2, priority_label="Medium",
                                confidence=Confidence(folder=folder, priority=priority), decoding="constrained",
                                truncated=False, model="m", adapter_id="v1@00000000")


@pytest.mark.parametrize(("folder", "priority", "reason"), [
    (0.9, 0.9, None), (0.6, 0.6, None), (0.59, 0.9, "folder"), (0.9, 0.1, "priority"), (0.2, 0.3, "both"),
    (None, 0.9, "unscored"), (0.9, None, "unscored"),
])
def test_a_confidence_below_the_threshold_needs_review(folder: float | None, priority: float | None,
                                                        reason: str | None) -> None:
    assert review_reason(result(folder, priority), 0.6) == reason


def test_the_review_record_is_the_result_plus_its_input() -> None:
    note = Notification(id="n1", app="Slack", title="Standup", body="moved to 10:30 ☕")
    flagged = result(0.3, 0.9).model_copy(update={"review": True})
    record = json.loads(review_value(flagged, note))
    assert record["input"] == {"id": "n1", "app": "Slack", "title": "Standup", "body": "moved to 10:30 ☕"}
    assert {k: v for k, v in record.items() if k != "input"} == json.loads(flagged.to_json_bytes())
    assert record["review"] is True and record["adapter_id"] == "v1@00000000"


def test_work_counts_its_pending_publications() -> None:
    # The outbox acknowledges an offset only when Work.pending reaches 0 (worker/stream/outbox.py).
    state = PartitionOffsets()
    state.track(7)
    record: ConsumerRecord[bytes, bytes] = ConsumerRecord("t", 0, 7, 0, 0, None, b"{}", None, 0, 2, [])
    work = Work(record, state)
    assert work.pending == 1

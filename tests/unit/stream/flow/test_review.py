"""Review routing: which results go to a person, the review record, and the two-publication ack rule."""

from __future__ import annotations

import json

import pytest
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from worker.contract import ClassificationResult, Confidence, Notification
from worker.observe.health import HealthState
from worker.observe.metrics import Metrics
from worker.settings import Settings
from worker.stream.flow.offsets import PartitionOffsets
from worker.stream.flow.outbox import Outbox
from worker.stream.flow.review import review_reason, review_value
from worker.stream.flow.work import Work
from worker.stream.kafka.clients import KafkaClients


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


def consumed(offset: int) -> Work:
    state = PartitionOffsets()
    state.track(offset)
    record: ConsumerRecord[bytes, bytes] = ConsumerRecord("raw", 0, offset, 1, 0, b"k", b"{}", None, 0, 2, [])
    return Work(record, state, Notification(id="n1", title="Standup"))


@pytest.mark.parametrize("first", [0, 1])
def test_an_offset_is_done_only_when_the_result_and_its_review_are_acknowledged(first: int) -> None:
    settings = Settings(review_topic="review", review_below=0.6)
    registry = CollectorRegistry()
    outbox = Outbox(settings, KafkaClients(settings), Metrics(registry), HealthState(60), on_acked=lambda: None,
                    on_halt=lambda work, reason: None)
    work = consumed(7)
    deliveries = outbox.result(work, result(0.3, 0.9))
    assert [d.topic for d in deliveries] == [settings.output_topic, "review"] and work.pending == 2
    assert json.loads(deliveries[0].value or b"")["review"] is True
    outbox._acknowledged([deliveries[first]])
    assert work.state.position() == 7  # one of the two is still unacknowledged: nothing to commit
    outbox._acknowledged([deliveries[1 - first]])
    assert work.state.position() == 8
    assert registry.get_sample_value("notif_review_total", {"reason": "folder"}) == 1


def test_a_confident_result_is_one_publication_and_review_off_flags_nothing() -> None:
    for settings in (Settings(review_topic="review"), Settings()):
        outbox = Outbox(settings, KafkaClients(settings), Metrics(CollectorRegistry()), HealthState(60),
                        on_acked=lambda: None, on_halt=lambda work, reason: None)
        confident, doubtful = consumed(3), consumed(4)
        assert len(outbox.result(confident, result(0.95, 0.9))) == 1 and confident.pending == 1
        flagged = outbox.result(doubtful, result(0.2, 0.9))
        assert len(flagged) == (2 if settings.review_topic else 1)
        assert json.loads(flagged[0].value or b"")["review"] is bool(settings.review_topic)

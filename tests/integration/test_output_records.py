"""What the output records carry through a real broker: the input's trace headers (NOTIF_PROPAGATE_HEADERS) on
results, review and shadow records, every input header on dead letters, and enriched output
(NOTIF_OUTPUT_FORMAT=enriched: the input's own object, as sent, with the classification under notif_triage)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from tests.integration.kafka_helpers import Topics, librdkafka_produce, read_all
from tests.integration.pipeline_helpers import Unsure, running_worker, settings_for
from worker.contract import FOLDERS, ClassificationResult, Notification
from worker.dev.broker import create_topics_async

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# W3C trace context and baggage (names in any case: W3C header names are case-insensitive), and one more header
TRACE = [("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), ("TraceState", b"vendor=1"),
         ("baggage", b"tenant=acme"), ("x-private", b"secret")]
CARRIED = TRACE[:3]
CE_HEADERS = [("ce_specversion", b"1.0"), ("ce_id", b"evt-9"), ("ce_source", b"/billing"), ("ce_type", b"due")]


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


class UnsureWithShadow(Unsure):
    """Instant answers under the review threshold, and a shadow adapter that answers the same."""

    def classify_shadow(self, notifications: Sequence[Notification]) -> list[ClassificationResult]:
        return self.classify(notifications)


async def test_trace_headers_reach_results_review_and_shadow_records_and_dead_letters_keep_every_header(
        broker: str, make_topics: Callable[..., Awaitable[Topics]]) -> None:
    topics = await make_topics(partitions=1)
    review, shadow = f"review-{topics.group}", f"shadow-{topics.group}"
    await create_topics_async(broker, [review, shadow], 1)
    values = [(js({"title": "Build failed", "body": f"run {i}"}), TRACE) for i in range(3)] + [(b"[]", TRACE)]
    await asyncio.to_thread(librdkafka_produce, broker, topics.input, "none", ["a", "b", "c", "bad"],
                            idempotent=topics.idempotent, values=values)
    settings = settings_for(topics, broker, review_topic=review, review_below=0.9, adapter="serving",
                            shadow_adapter="candidate", shadow_topic=shadow)
    async with running_worker(settings, UnsureWithShadow()):
        outputs = await read_all(broker, topics.output, at_least=3, timeout_s=60)
        reviews = await read_all(broker, review, at_least=3, timeout_s=30)
        shadows = await read_all(broker, shadow, at_least=3, timeout_s=30)
        dead = await read_all(broker, topics.dlq, at_least=1, timeout_s=30)
    for records in (outputs, reviews, shadows):
        assert sorted(r.key for r in records) == [b"a", b"b", b"c"]
        for record in records:
            assert list(record.headers) == CARRIED  # exactly those named, with their names and values as sent
    [letter] = dead
    assert list(letter.headers)[:len(TRACE)] == TRACE  # every source header, then the notif.* ones
    assert dict(letter.headers)["notif.error.reason"] == b"not_an_object"


async def test_other_header_names_or_none_are_carried_as_configured(
        broker: str, make_topics: Callable[..., Awaitable[Topics]]) -> None:
    topics = await make_topics(partitions=1)
    await asyncio.to_thread(librdkafka_produce, broker, topics.input, "none", ["a"], idempotent=topics.idempotent,
                            values=[(js({"title": "T", "body": "B"}), TRACE)])
    async with running_worker(settings_for(topics, broker, propagate_headers="X-Private, tracestate")):
        [result] = await read_all(broker, topics.output, at_least=1, timeout_s=60)
    assert list(result.headers) == [TRACE[1], TRACE[3]]
    topics = await make_topics(partitions=1)
    await asyncio.to_thread(librdkafka_produce, broker, topics.input, "none", ["a"], idempotent=topics.idempotent,
                            values=[(js({"title": "T", "body": "B"}), TRACE)])
    async with running_worker(settings_for(topics, broker, propagate_headers="")):
        [result] = await read_all(broker, topics.output, at_least=1, timeout_s=60)
    assert list(result.headers) == []


async def test_enriched_output_is_the_input_as_sent_plus_the_classification_with_key_and_headers(
        broker: str, make_topics: Callable[..., Awaitable[Topics]]) -> None:
    topics = await make_topics(partitions=1)
    fcm = {"message": {"notification": {"title": "Sale", "body": "50% off"}, "data": {"campaign": "c9"}}}
    stale = {"title": "Again", "body": "re-run", "notif_triage": {"folder": "old"}, "n": [1, 2.5, None]}
    invoice = {"title": "Invoice", "body": "due friday", "amount": 40}
    records = {"k-fcm": (js(fcm), TRACE), "k-text": (b"  plain text alert\n", TRACE), "k-stale": (js(stale), []),
               "k-ce": (js(invoice), [*CE_HEADERS, TRACE[0]])}
    await asyncio.to_thread(librdkafka_produce, broker, topics.input, "none", list(records),
                            idempotent=topics.idempotent, values=list(records.values()))
    async with running_worker(settings_for(topics, broker, output_format="enriched")):
        outputs = {r.key.decode(): r for r in await read_all(broker, topics.output, at_least=4, timeout_s=60)}
    assert sorted(outputs) == sorted(records)
    values = {key: json.loads(record.value) for key, record in outputs.items()}
    for key, value in values.items():
        triage = value.pop("notif_triage")
        assert triage["folder"] in FOLDERS and triage["priority"] in (1, 2, 3), key
    assert values == {"k-fcm": fcm, "k-text": {"text": "plain text alert"},
                      "k-stale": {key: stale[key] for key in ("title", "body", "n")}, "k-ce": invoice}
    assert list(outputs["k-fcm"].headers) == list(outputs["k-text"].headers) == CARRIED
    assert list(outputs["k-ce"].headers) == [TRACE[0]] and list(outputs["k-stale"].headers) == []

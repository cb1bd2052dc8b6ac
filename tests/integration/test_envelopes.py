"""Real producers' envelopes through the broker: written by librdkafka, read by the worker with no configuration.

Each record says what it expects: a result with these fields, or a dead letter with this reason. The
envelope each came in is counted by notif_input_envelopes_total{envelope}.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.integration.kafka_helpers import Topics, librdkafka_produce, read_all
from tests.integration.pipeline_helpers import running_worker, settings_for
from worker.contract import ClassificationResult, Notification
from worker.dev.instant import InstantClassifier

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CE_HEADERS = [("ce_specversion", b"1.0"), ("ce_id", b"evt-9"), ("ce_source", b"/billing"),
              ("ce_type", b"invoice.due"), ("content-type", b"application/json")]


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


# (id, value, headers, envelope, expected title, expected body) -- None as title: a dead letter, body the reason
RECORDS: list[tuple[str, bytes, list[tuple[str, bytes]], str, str | None, str]] = [
    ("sr", struct.pack(">bI", 0, 17) + js({"title": "Framed", "body": "json schema"}), [], "schema_registry",
     "Framed", "json schema"),
    ("avro", struct.pack(">bI", 0, 18) + b"\x02\x0cavro", [], "invalid", None, "unsupported_schema"),
    ("ce", js({"specversion": "1.0", "id": "e1", "source": "/github", "type": "pr",
               "data": {"title": "PR #7", "body": "review please"}}), [], "cloudevents", "PR #7", "review please"),
    ("ceb", js({"title": "Invoice", "body": "due friday"}), CE_HEADERS, "cloudevents_binary", "Invoice",
     "due friday"),
    ("fcm", js({"message": {"notification": {"title": "Sale", "body": "50% off"}}}), [], "fcm_v1", "Sale",
     "50% off"),
    ("apns", js({"aps": {"alert": {"title": "Mum", "body": "call me"}}}), [], "apns", "Mum", "call me"),
    ("android", js({"packageName": "com.whatsapp", "title": "Ann", "text": "lunch?",
                    "bigText": "lunch? at noon"}), [], "android", "Ann", "lunch? at noon"),
    ("web", js({"title": "Reminder", "options": {"body": "stand-up"}}), [], "webpush", "Reminder", "stand-up"),
    ("flat", js({"title": "Build failed", "body": "main"}), [], "flat", "Build failed", "main"),
    ("bin", b"\x01\x02\x03", [], "invalid", None, "binary_payload"),
]


async def test_every_envelope_from_a_librdkafka_producer_is_read_with_no_configuration(
        broker: str, make_topics: Callable[..., Awaitable[Topics]]) -> None:
    topics = await make_topics(partitions=1)
    await asyncio.to_thread(librdkafka_produce, broker, topics.input, "lz4", [r[0] for r in RECORDS],
                            idempotent=topics.idempotent, values=[(r[1], r[2]) for r in RECORDS])
    expected_results = {r[0]: r for r in RECORDS if r[4] is not None}
    expected_dead = {r[0]: r[5] for r in RECORDS if r[4] is None}
    seen = Recording()
    async with running_worker(settings_for(topics, broker), seen) as worker:
        outputs = await read_all(broker, topics.output, at_least=len(expected_results), timeout_s=60)
        dead = await read_all(broker, topics.dlq, at_least=len(expected_dead), timeout_s=30)
        counts = {r[3]: worker.metric("notif_input_envelopes_total", {"envelope": r[3]}) for r in RECORDS}
    by_key = {record.key.decode(): record for record in outputs}
    assert sorted(by_key) == sorted(expected_results)
    assert {record.key.decode(): dict(record.headers)["notif.error.reason"].decode() for record in dead} == (
        expected_dead)
    assert dict(next(r for r in dead if r.key == b"avro").headers)["notif.error.message"].find(b"18") >= 0
    for envelope in {r[3] for r in RECORDS}:
        assert counts[envelope] == sum(1 for r in RECORDS if r[3] == envelope), envelope
    # what the model was given, by each envelope's title: the fields the README's table promises
    assert sorted((n.title, n.body) for n in seen.notifications) == sorted(
        (r[4], r[5]) for r in expected_results.values())
    android = next(n for n in seen.notifications if n.title == "Ann")
    assert android.app == "com.whatsapp"
    ce = next(n for n in seen.notifications if n.title == "Invoice")
    assert (ce.id, ce.app) == ("evt-9", "/billing")


class Recording(InstantClassifier):
    """Answers at once and keeps every notification it was given (the worker's decoded view)."""

    def __init__(self) -> None:
        super().__init__()
        self.notifications: list[Notification] = []

    def answer(self, notification: Notification) -> ClassificationResult:
        self.notifications.append(notification)
        return super().answer(notification)

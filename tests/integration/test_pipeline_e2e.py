"""End to end in one process: every kind of input through a real broker, outputs and dead letters byte by byte."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence

import pytest
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import CollectorRegistry

from tests.integration.kafka_helpers import (
    Sent,
    Topics,
    committed,
    eventually,
    notification_messages,
    produce,
    read_all,
)
from tests.integration.pipeline_helpers import running_worker, settings_for
from tests.support import PoisonClassifier
from worker.contract import decode_notification
from worker.dev.instant import InstantClassifier

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

MAX_BYTES = 256


VALID: list[tuple[bytes | None, bytes]] = [
    (b"key-1", json.dumps({"id": "n1", "app": "Slack", "title": "Standup moved", "body": "now 10:30"}).encode()),
    (None, json.dumps({"id": "n2", "title": "50% off", "extra": {"ignored": True}}).encode()),  # key <- id
    (b"", json.dumps({"id": "n3", "body": "Your parcel is out for delivery"}).encode()),  # empty key <- id
    (None, json.dumps({"title": "no id and no key"}).encode()),
    (b"key-5", "Plain text: dinner at 8? 🍝".encode()),
    (None, b"   plain text with spaces   "),
]
INVALID: list[tuple[bytes | None, bytes | None, str]] = [
    (b"big", b"x" * (MAX_BYTES + 1), "too_large"),
    (b"utf", b"\xff\xfe title", "invalid_utf8"),
    (b"nil", b"", "empty"),
    (None, b"  \n ", "empty"),
    (b"tomb", None, "empty"),
    (None, b'{"title": ', "invalid_json"),
    (b"arr", b"[1, 2]", "not_an_object"),
    (None, b"42", "not_an_object"),
    (None, b'"a string"', "not_an_object"),
    (b"num", b'{"title": 5}', "wrong_type"),
    (None, b'{"app": "x", "title": "  "}', "missing_text"),
    (b"poison-key", json.dumps({"id": "p1", "title": "poison"}).encode(), "inference_error"),
    (b"token-key", json.dumps({"id": "p2", "title": "untokenizable"}).encode(), "inference_error"),
]


async def test_every_kind_of_input(broker: str, make_topics: Callable[..., Awaitable[Topics]],
                                   poison_classifier: PoisonClassifier) -> None:
    topics = await make_topics(partitions=2)
    settings = settings_for(topics, broker, max_message_bytes=MAX_BYTES, max_wait_ms=50)
    messages = [*VALID, *[(key, value) for key, value, _ in INVALID]]
    sent = await produce(broker, topics.input, messages, headers=[("trace-id", b"t-1")], partitions=2)
    async with running_worker(settings, poison_classifier) as worker:
        outputs = await read_all(broker, topics.output, at_least=len(VALID), timeout_s=40)
        dead = await read_all(broker, topics.dlq, at_least=len(INVALID), timeout_s=10)
        ends = {p: 1 + max(s.offset for s in sent if s.partition == p) for p in (0, 1)}

        async def all_committed() -> bool:
            return await committed(broker, topics.group, topics.input) == ends

        await eventually(all_committed, 15, "every input offset committed")
        assert worker.health.ready() == (True, "ok")
    registry = worker.registry

    expect_outputs(outputs, sent[: len(VALID)])
    expect_dead_letters(dead, sent[len(VALID):], topics.input)
    expect_metrics(registry)


def expect_outputs(outputs: Sequence, sent: Sequence[Sent]) -> None:
    expected = []
    for item in sent:
        assert item.value is not None
        notification = decode_notification(item.value, max_bytes=MAX_BYTES)
        key = item.key or (notification.id.encode() if notification.id else None)
        expected.append((key, InstantClassifier().answer(notification).to_json_bytes()))
    assert sorted(((r.key, r.value) for r in outputs), key=repr) == sorted(expected, key=repr)
    assert len(outputs) == len(sent)  # no duplicates either
    assert all(r.headers == () for r in outputs)
    # each keyed result is where Kafka's default partitioner (murmur2 of the key) puts it
    keyed = [r for r in outputs if r.key is not None]
    assert len(keyed) == sum(key is not None for key, _ in expected) == 4
    assert all(r.partition == DefaultPartitioner()(r.key, [0, 1], [0, 1]) for r in keyed)


def expect_dead_letters(dead: Sequence, sent: Sequence[Sent], source_topic: str) -> None:
    by_source = {(int(dict(r.headers)["notif.source.partition"]), int(dict(r.headers)["notif.source.offset"])): r
                 for r in dead}
    assert len(dead) == len(sent) == len(by_source)
    for item, (_, _, reason) in zip(sent, INVALID, strict=True):
        record = by_source[(item.partition, item.offset)]
        assert record.key == item.key and record.value == item.value  # original bytes, unchanged
        headers = dict(record.headers)
        assert [name for name, _ in record.headers] == [
            "trace-id", "notif.error.reason", "notif.error.message", "notif.source.topic",
            "notif.source.partition", "notif.source.offset",
        ]
        assert headers["trace-id"] == b"t-1"
        assert headers["notif.error.reason"] == reason.encode()
        assert headers["notif.error.message"]
        assert headers["notif.source.topic"] == source_topic.encode()
    messages = {r.key: dict(r.headers)["notif.error.message"] for r in dead}
    assert messages[b"poison-key"] == b"RuntimeError: CUDA out of memory"
    assert messages[b"token-key"] == b"ValueError: tokenizer failed"


def expect_metrics(registry: CollectorRegistry) -> None:
    def value(name: str, labels: dict[str, str] | None = None) -> float:
        result = registry.get_sample_value(name, labels or {})
        return 0.0 if result is None else result

    assert value("notif_messages_consumed_total") == len(VALID) + len(INVALID)
    reasons = [reason for _, _, reason in INVALID]
    for reason in set(reasons):
        assert value("notif_dead_letters_total", {"reason": reason}) == reasons.count(reason)
    results = sum(value("notif_classifications_total", {"folder": f, "priority": str(p)})
                  for f in ("Work", "Personal", "Promotions", "Alerts") for p in (1, 2, 3))
    assert results == len(VALID)
    assert value("notif_inference_errors_total") >= 1
    assert value("notif_end_to_end_latency_seconds_count") == len(VALID)
    assert value("notif_batch_size_sum") == len(VALID) + 1  # the poison item went through the model too
    assert value("notif_commits_total") >= 1
    assert value("notif_commit_failures_total") == 0
    assert value("notif_assigned_partitions") == 2
    assert value("notif_parse_failures_total") == 0


async def test_results_keep_input_order_within_a_partition(broker: str,
                                                           make_topics: Callable[..., Awaitable[Topics]]) -> None:
    # one input and one output partition, many small batches: one publisher hands them over in order
    topics = await make_topics(partitions=1)
    settings = settings_for(topics, broker, max_batch_size=4, max_wait_ms=1)
    messages = notification_messages(400)
    await produce(broker, topics.input, messages)
    async with running_worker(settings, InstantClassifier()):
        outputs = await read_all(broker, topics.output, at_least=len(messages), timeout_s=40)
    assert [r.key for r in sorted(outputs, key=lambda r: r.offset)] == [key for key, _ in messages]

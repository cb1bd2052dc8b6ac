"""Result keys and dead-letter headers."""

from __future__ import annotations

import json
import re

from tests.readme import readme_text
from worker.contract import ClassificationResult, Notification
from worker.stream.flow.records import (
    ENRICHED_KEY,
    MAX_MESSAGE_CHARS,
    dead_letter_headers,
    enriched_value,
    header_names,
    oversize,
    propagated,
    result_key,
)


def test_result_key_prefers_the_input_key_then_the_id() -> None:
    assert result_key(b"k", Notification(id="n1", title="t")) == b"k"
    assert result_key(b"", Notification(id="n1", title="t")) == b"n1"
    assert result_key(None, Notification(id="n1", title="t")) == b"n1"
    assert result_key(None, Notification(title="t")) is None


def test_dead_letter_headers_keep_the_input_headers_and_replace_ours() -> None:
    headers = dead_letter_headers(
        [("trace", b"abc"), ("notif.error.reason", b"old")], reason="invalid_json", message="bad",
        topic="in", partition=3, offset=42,
    )
    assert headers == [
        ("trace", b"abc"),
        ("notif.error.reason", b"invalid_json"),
        ("notif.error.message", b"bad"),
        ("notif.source.topic", b"in"),
        ("notif.source.partition", b"3"),
        ("notif.source.offset", b"42"),
    ]


def test_dead_letter_message_is_cut() -> None:
    headers = dict(dead_letter_headers([], reason="r", message="é" * 5000, topic="t", partition=0, offset=0))
    assert headers["notif.error.message"].decode("utf-8") == "é" * MAX_MESSAGE_CHARS


def test_oversize_names_the_key_or_the_headers_over_their_limit() -> None:
    assert oversize(b"k" * 16, [("a", b"b" * 30)], max_key_bytes=16, max_header_bytes=31) is None
    assert oversize(None, (), max_key_bytes=16, max_header_bytes=64) is None
    assert oversize(b"k" * 17, [], max_key_bytes=16, max_header_bytes=64) == "the key is 17 bytes; the limit is 16"
    assert oversize(b"k", [("a", b"b" * 30), ("é", b"")], max_key_bytes=16, max_header_bytes=32) == (
        "the headers are 33 bytes; the limit is 32")


def test_propagated_headers_are_the_named_ones_in_any_case_in_their_order() -> None:
    names = header_names("traceparent, TraceState,baggage,")
    assert names == {"traceparent", "tracestate", "baggage"}
    headers = [("x-other", b"1"), ("Traceparent", b"00-abc-def-01"), ("baggage", b"k=v"), ("tracestate", b"s")]
    assert propagated(headers, names) == [("Traceparent", b"00-abc-def-01"), ("baggage", b"k=v"), ("tracestate", b"s")]
    assert propagated(headers, header_names("")) == [] and propagated([], names) == []


def test_enriched_value_is_the_input_object_with_the_classification_under_one_key() -> None:
    result = {"folder": "Work", "priority": 3}
    source = {"message": {"notification": {"title": "T"}}, "notif_triage": "stale", "n": 1}
    assert json.loads(enriched_value(source, result)) == {"message": {"notification": {"title": "T"}}, "n": 1,
                                                          ENRICHED_KEY: result}
    assert json.loads(enriched_value("plain text body", result)) == {"text": "plain text body", ENRICHED_KEY: result}


def test_the_readmes_enriched_example_is_what_the_worker_publishes() -> None:
    section = readme_text().split("**Trace headers and enriched output.**", 1)[1]
    sent, published = (json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.S)[:2])
    result = ClassificationResult.model_validate(published[ENRICHED_KEY])  # a real result record
    assert json.loads(enriched_value(sent, result.model_dump(mode="json"))) == published

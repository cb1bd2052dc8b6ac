"""Result keys, dead-letter headers, the headers results carry on, and enriched values."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


RESULT = b'{"folder":"Work","priority":3}'


def test_enriched_value_is_the_input_as_sent_with_the_classification_appended_under_one_key() -> None:
    source = b' {"title": "T",  "n": 1.50e2, "big": 12345678901234567890, "s": "caf\\u00e9"}\n'
    assert enriched_value(source, RESULT) == (  # the input's own bytes: spacing, number forms, escapes
        b'{"title": "T",  "n": 1.50e2, "big": 12345678901234567890, "s": "caf\\u00e9","notif_triage":' + RESULT + b"}")
    nested = b'{"data": {"notif_triage": 1}, "title": "T"}'  # a key of that name deeper down stays
    assert json.loads(enriched_value(nested, RESULT)) == {"data": {"notif_triage": 1}, "title": "T",
                                                          ENRICHED_KEY: json.loads(RESULT)}
    assert json.loads(enriched_value(b"{ }", RESULT)) == {ENRICHED_KEY: json.loads(RESULT)}


@pytest.mark.parametrize("source", [b'{"notif_triage": "stale", "n": 1}', b'{"n": 1, "notif\\u005ftriage": "stale"}',
                                    b'{"\\u006Eotif_triage": {"folder": "old"}, "n": 1}',
                                    b'{"notif_triage": 0, "n": 1, "x": "\\ud800 caf\xc3\xa9"}'],
                         ids=["plain", "escaped underscore", "escaped n", "lone surrogate escape"])
def test_an_input_holding_the_key_has_it_replaced_however_it_is_spelt(source: bytes) -> None:
    value = enriched_value(source, RESULT)
    assert json.loads(value) == {**json.loads(source), ENRICHED_KEY: json.loads(RESULT)}
    assert json.loads(value)["n"] == 1
    assert value.count(b"notif") == 1  # one key: no duplicate for a reader to choose from


def test_text_is_wrapped_as_one_json_string() -> None:
    text = 'he said "hi"\n\tcafé \\ done'
    assert json.loads(enriched_value(text, RESULT)) == {"text": text, ENRICHED_KEY: json.loads(RESULT)}


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                       max_size=3), max_leaves=12)
OBJECTS = st.dictionaries(st.sampled_from([ENRICHED_KEY, "title", "notif", "n\u00e9"]) | st.text(max_size=14),
                          JSON_VALUES, max_size=5)


@settings(max_examples=300, deadline=None)
@given(OBJECTS, st.booleans(), st.sampled_from([None, 1]))
def test_any_object_however_written_is_itself_plus_the_key(obj: dict[str, Any], ascii_only: bool,
                                                           indent: int | None) -> None:
    source = json.dumps(obj, ensure_ascii=ascii_only, indent=indent).encode()
    assert json.loads(enriched_value(source, RESULT)) == {**obj, ENRICHED_KEY: json.loads(RESULT)}


def test_the_readmes_enriched_example_is_what_the_worker_publishes() -> None:
    section = readme_text().split("**Trace headers and enriched output.**", 1)[1]
    sent, published = re.findall(r"```json\n(.*?)```", section, re.S)[:2]
    result = ClassificationResult.model_validate(json.loads(published)[ENRICHED_KEY])  # a real result record
    assert json.loads(enriched_value(sent.encode(), result.to_json_bytes())) == json.loads(published)

"""Every envelope the worker reads, what each field becomes, and that reading never raises (hypothesis)."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.contract import InvalidNotification, Notification, decode_notification
from worker.envelopes.mapping import FieldMapping, FieldMappingError
from worker.envelopes.read import ENVELOPES, Read, read_notification
from worker.envelopes.shapes import FIELDS
from worker.settings import Settings


def read(value: Any, headers: list[tuple[str, bytes]] | None = None, **kwargs: Any) -> tuple[str, Notification]:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    result = read_notification(raw, headers or [], **kwargs)
    assert result.error is None, result.error
    assert result.notification is not None and result.envelope in ENVELOPES
    return result.envelope, result.notification


def fields(n: Notification) -> dict[str, str]:
    return {k: v for k, v in n.model_dump().items() if v is not None}


CASES: list[tuple[str, Any, str, dict[str, str]]] = [
    ("flat", {"id": "n1", "app": "CI", "title": "Build failed", "body": "main is red", "sender": "ci",
              "timestamp": "2026-12-04T01:00:00Z"}, "flat",
     {"id": "n1", "app": "CI", "title": "Build failed", "body": "main is red", "sender": "ci",
      "timestamp": "2026-12-04T01:00:00Z"}),
    ("web push plain", {"title": "New comment", "body": "on your PR"}, "flat",
     {"title": "New comment", "body": "on your PR"}),
    ("fcm v1", {"message": {"token": "t", "name": "projects/p/messages/7",
                            "notification": {"title": "Sale", "body": "50% off"}, "data": {"app": "Shop"}}},
     "fcm_v1", {"title": "Sale", "body": "50% off", "app": "Shop", "id": "projects/p/messages/7"}),
    ("fcm v1 android", {"message": {"android": {"notification": {"title": "T", "body": "B"}}}}, "fcm_v1",
     {"title": "T", "body": "B"}),
    ("fcm legacy", {"to": "tok", "notification": {"title": "Meeting", "body": "in 5 min"},
                    "data": {"id": "m1", "sender": "Ann"}}, "fcm_legacy",
     {"title": "Meeting", "body": "in 5 min", "id": "m1", "sender": "Ann"}),
    ("fcm data only", {"data": {"title": "Card used", "body": "$40 at Shop", "id": "d1", "app": "Bank"}},
     "fcm_data", {"title": "Card used", "body": "$40 at Shop", "id": "d1", "app": "Bank"}),
    ("apns dict", {"aps": {"alert": {"title": "Mum", "subtitle": "Family", "body": "call me"}}}, "apns",
     {"title": "Mum", "body": "Family\ncall me"}),
    ("apns string", {"aps": {"alert": "Your code is 123456"}}, "apns", {"body": "Your code is 123456"}),
    ("android", {"packageName": "com.whatsapp", "title": "Mum", "text": "call me",
                 "bigText": "call me when you can", "subText": "Family"}, "android",
     {"app": "com.whatsapp", "title": "Mum", "body": "call me when you can", "sender": "Family"}),
    ("android text and other bigText", {"packageName": "p", "title": "T", "text": "one", "bigText": "two"},
     "android", {"app": "p", "title": "T", "body": "one\ntwo"}),
    ("android text only", {"packageName": "com.slack", "title": "#ops", "text": "deploy done"}, "android",
     {"app": "com.slack", "title": "#ops", "body": "deploy done"}),
    ("web push options", {"title": "Reminder", "options": {"body": "stand-up", "tag": "r1"}}, "webpush",
     {"title": "Reminder", "body": "stand-up", "id": "r1"}),
    ("web push notification", {"notification": {"title": "T", "body": "B"}}, "webpush", {"title": "T", "body": "B"}),
    ("cloudevents structured", {"specversion": "1.0", "id": "e1", "source": "/github", "type": "pr",
                                "time": "2026-12-04T01:00:00Z", "data": {"title": "PR", "body": "review"}},
     "cloudevents", {"id": "e1", "app": "/github", "title": "PR", "body": "review",
                     "timestamp": "2026-12-04T01:00:00Z"}),
    ("cloudevents of fcm", {"specversion": "1.0", "id": "e2", "source": "s", "type": "t",
                            "data": {"message": {"notification": {"title": "T", "body": "B"}}}},
     "cloudevents", {"id": "e2", "app": "s", "title": "T", "body": "B"}),
    ("cloudevents base64", {"specversion": "1.0", "id": "e3", "source": "s", "type": "t",
                            "data_base64": base64.b64encode(b"plain text body").decode()},
     "cloudevents", {"id": "e3", "app": "s", "body": "plain text body"}),
]


@pytest.mark.parametrize(("name", "value", "envelope", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_envelope_gives_its_fields(name: str, value: Any, envelope: str, expected: dict[str, str]) -> None:
    found, notification = read(value)
    assert found == envelope
    assert fields(notification) == expected


def test_cloudevents_binary_mode_reads_the_value_and_the_ce_headers() -> None:
    headers = [("ce_specversion", b"1.0"), ("ce_id", b"e9"), ("ce_source", b"/billing"),
               ("ce_time", b"2026-12-04T02:00:00Z"), ("content-type", b"application/json")]
    envelope, notification = read({"title": "Invoice", "body": "due"}, headers)
    assert envelope == "cloudevents_binary"
    assert fields(notification) == {"id": "e9", "app": "/billing", "title": "Invoice", "body": "due",
                                    "timestamp": "2026-12-04T02:00:00Z"}
    envelope, notification = read(b"plain body", headers)
    assert envelope == "cloudevents_binary" and notification.body == "plain body"


def test_cloudevents_binary_text_content_is_the_body_even_when_it_looks_like_json() -> None:
    headers = [("ce_specversion", b"1.0"), ("ce_id", b"e9"), ("content-type", b"text/plain; charset=utf-8")]
    assert read(b'{"title": "x"}', headers)[1] == Notification(id="e9", body='{"title": "x"}')


def test_a_cloudevents_content_type_marks_a_structured_event_even_without_data() -> None:
    headers = [("content-type", b"application/cloudevents+json; charset=UTF-8")]
    result = read_notification(json.dumps({"specversion": "1.0", "id": "e1", "title": "not the data"}).encode(),
                               headers)
    assert result.error is not None and result.error.reason == "missing_text" and "no data" in result.error.message
    assert read({"specversion": "1.0", "id": "e1", "data": "text"}, headers)[0] == "cloudevents"


def test_cloudevents_data_base64_json_is_parsed_like_any_value() -> None:
    event = {"specversion": "1.0", "id": "e", "source": "s", "type": "t"}
    good = base64.b64encode(json.dumps({"aps": {"alert": "hi"}}).encode()).decode()
    assert read({**event, "data_base64": good})[1] == Notification(id="e", app="s", body="hi")
    result = read_notification(json.dumps({**event, "data_base64": base64.b64encode(b'{"title": ').decode()}).encode())
    assert result.error is not None and result.error.reason == "invalid_json"


def test_a_text_content_type_keeps_the_binary_mode_value_as_its_source() -> None:
    headers = [("ce_specversion", b"1.0"), ("ce_id", b"e9"), ("content-type", b"text/plain")]
    read = read_notification(b'  {"title": "T"} ', headers)
    assert read.notification is not None and read.notification.body == '{"title": "T"}'
    assert read.source == '{"title": "T"}'


def frame(schema_id: int, payload: bytes) -> bytes:
    return struct.pack(">bI", 0, schema_id) + payload


def test_a_schema_registry_json_payload_is_unwrapped() -> None:
    envelope, notification = read(frame(42, b'{"title": "Build failed", "body": "main"}'))
    assert envelope == "schema_registry" and fields(notification) == {"title": "Build failed", "body": "main"}
    envelope, notification = read(frame(42, json.dumps({"aps": {"alert": "hi"}}).encode()))
    assert envelope == "apns" and notification.body == "hi"


def test_a_schema_registry_avro_payload_is_rejected_naming_the_schema_id_never_read_as_text() -> None:
    result = read_notification(frame(1234, b"\x02\x0cavro bytes"))
    assert result.notification is None and result.error is not None
    assert result.error.reason == "unsupported_schema" and "1234" in result.error.message


def test_text_that_starts_with_a_control_byte_is_never_a_body() -> None:
    result = read_notification(b"\x01\x02binary thing")
    assert result.error is not None and result.error.reason == "binary_payload"
    assert read(b"\tindented text")[1].body == "indented text"


def test_plain_text_with_envelope_like_words_is_still_the_body() -> None:
    assert read(b'he wrote "text": nothing') == ("text", Notification(body='he wrote "text": nothing'))


def test_a_user_mapping_is_tried_first_and_falls_back_to_detection() -> None:
    mapping = FieldMapping.parse('{"title": "/payload/subject", "body": "/payload/text", "id": "/meta/n"}')
    value = {"payload": {"subject": "Outage", "text": "db down"}, "meta": {"n": 7}}
    assert read(value, mapping=mapping) == ("mapped", Notification(title="Outage", body="db down", id="7"))
    assert read({"title": "plain"}, mapping=mapping)[0] == "flat"  # nothing at the paths: detection


@pytest.mark.parametrize(("text", "names"), [
    ('{"title": "payload/subject"}', "'title'"),  # a JSON Pointer starts with /
    ('{"headline": "/a"}', "'headline'"),
    ('{"title": 3}', "'title'"),
    ("not json", "not JSON"),
    ('{"app": "/a"}', "title or body"),
])
def test_a_mapping_that_does_not_parse_stops_start_up_naming_the_field(text: str, names: str) -> None:
    with pytest.raises(FieldMappingError, match=names):
        FieldMapping.parse(text)
    with pytest.raises(ValueError, match=names):
        Settings(input_fields=text)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                max_size=5), max_leaves=25)
KEYS = st.sampled_from(["title", "body", "text", "bigText", "packageName", "aps", "alert", "message", "data",
                        "notification", "options", "specversion", "data_base64", "id", "source", "app"])
OBJECTS = st.dictionaries(KEYS | st.text(max_size=8), JSON, max_size=6)
CONTENT_TYPES = st.sampled_from([b"application/json", b"text/plain", b"application/cloudevents+json"])
HEADERS = st.lists(st.tuples(st.sampled_from(["ce_specversion", "ce_id", "ce_source", "content-type", "x"]),
                             CONTENT_TYPES | st.binary(max_size=8)), max_size=3)
ODD_POINTERS = '{"title": "/title/0", "body": "/data/body", "id": "/message/-"}'  # into strings, past a list's end
MAPPINGS = st.sampled_from([None, FieldMapping.parse(ODD_POINTERS)])


def settled(result: Read) -> bool:
    return (result.notification is None) != (result.error is None) and result.envelope in ENVELOPES


@settings(max_examples=300, deadline=None)
@given(OBJECTS, HEADERS, MAPPINGS)
def test_any_json_object_gives_a_notification_or_a_rejection(obj: dict[str, Any], headers: list,
                                                             mapping: FieldMapping | None) -> None:
    assert settled(read_notification(json.dumps(obj).encode(), headers, mapping=mapping))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), HEADERS, MAPPINGS)
def test_any_bytes_give_a_notification_or_a_rejection(raw: bytes, headers: list, mapping: FieldMapping | None) -> None:
    assert settled(read_notification(raw, headers, mapping=mapping))


def outcome(result: Read) -> Notification | str:
    return result.notification if result.error is None else result.error.reason  # type: ignore[return-value]


def contract_outcome(raw: bytes) -> Notification | str:
    try:
        return decode_notification(raw)
    except InvalidNotification as exc:
        return exc.reason


FLAT_KEYS = st.sampled_from([*FIELDS, "text", "bigText", "packageName", "aps", "message", "notification", "options",
                             "data", "to"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(FLAT_KEYS | st.text(max_size=8), st.text(max_size=12) | JSON, max_size=6),
       st.text(max_size=12) | JSON, st.booleans())
def test_todays_flat_objects_read_exactly_as_the_contract_decodes_them(obj: dict[str, Any], body: Any,
                                                                        ascii_only: bool) -> None:
    obj.pop("specversion", None)  # with data, that would make it a CloudEvent
    raw = json.dumps({**obj, "body": body}, ensure_ascii=ascii_only).encode()
    assert outcome(read_notification(raw)) == contract_outcome(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80) | st.text(max_size=40).map(str.encode))
def test_todays_text_reads_exactly_as_the_contract_decodes_it(raw: bytes) -> None:
    control = raw[:1] != b"" and ((raw[0] < 32 and raw[0] not in (9, 10, 13)) or raw[0] == 127)
    if control or raw.lstrip()[:1] == b"{":
        return  # control bytes are binary now (binary_payload); objects are the test above's
    assert outcome(read_notification(raw)) == contract_outcome(raw)


@pytest.mark.parametrize(("name", "value"), [(c[0], c[1]) for c in CASES], ids=[c[0] for c in CASES])
def test_the_source_is_the_input_objects_bytes_as_sent(name: str, value: Any) -> None:
    raw = json.dumps(value, indent=1).encode()
    assert read_notification(raw).source == raw


CE_BINARY = [("ce_specversion", b"1.0"), ("ce_id", b"e9"), ("ce_source", b"/billing")]


@pytest.mark.parametrize(("raw", "headers", "source"), [
    (b"  plain text body \n", [], "plain text body"),  # text: the body, wrapped by the output
    (b"he wrote \"text\": nothing", [], 'he wrote "text": nothing'),  # text past the fast path
    (frame(42, b'{"aps": {"alert": "hi"}, "x": 1}'), [], b'{"aps": {"alert": "hi"}, "x": 1}'),  # the frame's payload
    (b'{"title": "Invoice", "body": "due"}', CE_BINARY, b'{"title": "Invoice", "body": "due"}'),  # the event's data
    (b"plain body", CE_BINARY, "plain body"),
], ids=["text", "text slow path", "schema registry", "cloudevents binary", "cloudevents binary text"])
def test_the_source_of_text_frames_and_binary_cloudevents(raw: bytes, headers: list, source: Any) -> None:
    read = read_notification(raw, headers)
    assert read.error is None and read.source == source


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | OBJECTS.map(lambda obj: json.dumps(obj).encode()), HEADERS)
def test_every_notification_has_its_source_an_object_or_its_body(raw: bytes, headers: list) -> None:
    read = read_notification(raw, headers)
    assert (read.source is None) == (read.notification is None)
    if isinstance(read.source, bytes):
        assert isinstance(json.loads(read.source), dict)  # what enriched output appends its key to
    elif read.source is not None:
        assert read.notification is not None and read.source == read.notification.body

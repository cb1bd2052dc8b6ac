"""A record's value and headers in, a Notification (or a typed rejection) and its envelope's name out.

One parse per record. The worker's own flat JSON and plain text take the contract's fast path
(`decode_notification`, one pass of pydantic's parser) unless the bytes show a frame or an envelope's keys;
everything else is parsed once with `json.loads` and handed to the one detector (shapes.py). CloudEvents
wrap any of the shapes: structured (`specversion` and `data` in the object, or a `content-type:
application/cloudevents+json` header) or binary (`ce_*` headers, the value is the data, read as text when the
`content-type` header says text/*); their `source`, `id` and `time` fill app, id and timestamp where the data
has none. Reading never raises: every failure is an InvalidNotification with its reason.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker.contract import (
    MAX_JSON_DEPTH,
    InvalidNotification,
    Notification,
    decode_notification,
    notification_from_fields,
    too_deep,
)
from worker.envelopes.framing import unframe
from worker.envelopes.mapping import FieldMapping
from worker.envelopes.shapes import FLAT, Fields, detect

TEXT = "text"
ENVELOPES = ("flat", "text", "mapped", "schema_registry", "cloudevents", "cloudevents_binary", "fcm_v1", "fcm_legacy",
             "fcm_data", "apns", "android", "webpush", "invalid")
Headers = Sequence[tuple[str, bytes]]

# The keys that make an object something other than the flat shape; bytes without any of them take the fast path.
_MARKERS = re.compile(rb'"(?:message|aps|notification|options|packageName|bigText|text|data|data_base64'
                      rb'|specversion)"\s*:')


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~0.3 us more, once per record
class Read:
    """What a record's value is: ``notification``, or ``error``; ``envelope`` names the shape found."""

    envelope: str
    notification: Notification | None = None
    error: InvalidNotification | None = None
    source: bytes | str | None = None  # with a notification: its JSON object's bytes as received, or its text


def read_notification(raw: bytes | None, headers: Headers = (), *, max_bytes: int = 65536,
                      mapping: FieldMapping | None = None) -> Read:
    """Read one record's value (and its headers, for CloudEvents); never raises.

    Precedence, for a JSON object: a user's ``mapping`` first (when it finds a title or a body), then CloudEvents
    (whose data goes through the same order), then the known shapes (shapes.detect). ``source`` is what enriched
    output embeds: the bytes of the JSON object the notification was read from (inside a schema-registry frame:
    the payload), or, for text, the body. No copy or parse: free to keep.
    """
    try:
        envelope, notification, source = _read(raw, headers, max_bytes, mapping)
    except InvalidNotification as exc:
        return Read("invalid", error=exc)
    except Exception as exc:  # anything a parser or a shape raises: the record is the problem, never the worker
        return Read("invalid", error=InvalidNotification("undecodable", f"{type(exc).__name__}: {exc}"[:300]))
    return Read(envelope, notification, source=source)


def _read(raw: bytes | None, headers: Headers, max_bytes: int,
          mapping: FieldMapping | None) -> tuple[str, Notification, bytes | str]:
    if not raw:
        raise InvalidNotification("empty", "the message value is empty")
    if len(raw) > max_bytes:
        raise InvalidNotification("too_large", f"the message is {len(raw)} bytes; the limit is {max_bytes}")
    structured = False
    if headers:
        if any(name == "ce_specversion" for name, _ in headers):
            return _cloudevent_binary(raw, headers, max_bytes, mapping)
        structured = _content_type(headers).startswith("application/cloudevents+json")
    payload, schema_id = raw, None
    if raw[0] < 32 or raw[0] == 127:  # a frame, or bytes that are not text (tab, newline, CR are: unframe says)
        unframed = unframe(raw)
        payload, schema_id = unframed.payload, unframed.schema_id
    if mapping is None and schema_id is None and not structured and not _MARKERS.search(payload):
        notification = decode_notification(payload, max_bytes=max_bytes)  # flat JSON or text: the fast path
        if payload[:1] == b"{" or payload.lstrip()[:1] == b"{":
            return FLAT, notification, payload
        return TEXT, notification, notification.body or ""
    if payload.lstrip()[:1] not in (b"{", b"["):
        notification = decode_notification(payload, max_bytes=max_bytes)
        return TEXT, notification, notification.body or ""
    envelope, notification = notification_from_object(_parse_object(payload), mapping, event=structured)
    return ("schema_registry" if schema_id is not None and envelope == FLAT else envelope), notification, payload


def _content_type(headers: Headers) -> str:
    value = next((value for name, value in headers if name.lower() == "content-type" and value), b"")
    return value.decode("latin-1").strip().lower()


def _parse_object(payload: bytes) -> dict[str, Any]:
    # the count first, as the contract does: only text with that many brackets can nest too deep
    if payload.count(b"[") + payload.count(b"{") > MAX_JSON_DEPTH and too_deep(payload):
        raise InvalidNotification("too_deep", "JSON nested too deep")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidNotification("invalid_utf8", f"not valid UTF-8 at byte {exc.start}") from exc
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidNotification("invalid_json", f"invalid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidNotification("not_an_object", f"JSON {type(value).__name__} is not a notification object")
    return value


def notification_from_object(obj: Mapping[str, Any], mapping: FieldMapping | None = None, *,
                             event: bool = False) -> tuple[str, Notification]:
    """The envelope and Notification of a parsed JSON object (also the trainer's reader for JSONL lines).

    A user's mapping is tried first, and wins when it finds a title or a body (a mapping is the user's word
    about their own shape); then CloudEvents' structured mode (``event``: a content-type header said so);
    then the shapes, in shapes.detect's order.
    """
    if mapping is not None and (fields := mapping.fields(obj)) is not None:
        return "mapped", notification_from_fields(fields)
    if event or ("specversion" in obj and ("data" in obj or "data_base64" in obj)):
        _, inner = _cloudevent_data(obj, mapping)
        return "cloudevents", notification_from_fields(_with_event(inner, obj))
    envelope, fields = detect(obj)
    return envelope, notification_from_fields(fields)


def _cloudevent_data(event: Mapping[str, Any], mapping: FieldMapping | None) -> tuple[str, Fields]:
    data: Any = event.get("data")
    if data is None and isinstance(event.get("data_base64"), str):
        try:
            decoded = base64.b64decode(event["data_base64"], validate=True)
            data = _parse_object(decoded) if decoded.lstrip()[:1] == b"{" else decoded.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidNotification("undecodable", f"CloudEvent data_base64 is not base64 UTF-8 text: {exc}") from exc
    if data is None:
        raise InvalidNotification("missing_text", "the CloudEvent carries no data")
    if isinstance(data, Mapping):
        if mapping is not None and (fields := mapping.fields(data)) is not None:
            return "mapped", fields
        return detect(data)
    if isinstance(data, str):
        return TEXT, {"body": data}
    raise InvalidNotification("missing_text", f"CloudEvent data is {type(data).__name__}, not an object or text")


def _with_event(fields: Fields, attributes: Mapping[str, Any]) -> Fields:
    """The event's own attributes where the data left a field empty: source -> app, id -> id, time -> timestamp."""
    filled = dict(fields)
    for field, attribute in (("app", "source"), ("id", "id"), ("timestamp", "time")):
        if not filled.get(field) and isinstance(attributes.get(attribute), str):
            filled[field] = attributes[attribute]
    return filled


def _cloudevent_binary(raw: bytes, headers: Headers, max_bytes: int,
                       mapping: FieldMapping | None) -> tuple[str, Notification, bytes | str]:
    """CloudEvents' binary mode: the attributes are `ce_*` headers and the value is the event's data.

    A `content-type` header (the event's datacontenttype) of text/* makes the value the body as it is, even when
    it looks like JSON; otherwise a value that opens an object is read like any object, and anything else by the
    contract's text rules (a mislabelled content type never turns a readable value into a rejection).
    """
    attributes = {name[3:]: value.decode("utf-8", "replace") for name, value in headers
                  if name.startswith("ce_") and value is not None}
    payload, content_type = unframe(raw).payload, _content_type(headers)
    source: bytes | str = payload
    if content_type.startswith("text/"):
        source = _text(payload)
        fields: Fields = {"body": source}
    elif payload.lstrip()[:1] == b"{":
        _, fields = _cloudevent_data({"data": _parse_object(payload)}, mapping)
    else:
        source = decode_notification(payload, max_bytes=max_bytes).body or ""
        fields = {"body": source}
    return "cloudevents_binary", notification_from_fields(_with_event(fields, attributes)), source


def _text(payload: bytes) -> str:
    """A value that is text by its content type: the body, not read as JSON."""
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise InvalidNotification("invalid_utf8", f"not valid UTF-8 at byte {exc.start}") from exc
    if not text:
        raise InvalidNotification("empty", "the message holds only whitespace")
    return text

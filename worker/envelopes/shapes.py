"""Each notification envelope, and the one place that decides which one an object is.

A shape turns a parsed JSON object into the contract's fields (title, body, app, sender, id, timestamp) and
names itself for the metric. Detection looks at keys only. An object with a top-level ``body`` is the flat
shape whatever else it holds (no envelope puts a body there, and today's flat notifications ignore unknown
fields); otherwise the envelopes are tried most specific first, and one that yields neither a title nor a body
hands on to the next, so an unrelated field that happens to be called ``message`` or ``aps`` never costs a
notification its text. The flat shape is the last resort. Where several fields could give the body (Android's
text and bigText, Apple's subtitle and body) they are joined, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Fields = dict[str, Any]
Shape = Callable[[Mapping[str, Any]], Fields | None]

FLAT = "flat"
FIELDS = ("id", "app", "title", "body", "sender", "timestamp")
FCM_LEGACY_KEYS = frozenset({"to", "registration_ids", "condition", "collapse_key", "priority", "time_to_live",
                             "data"})


# The objects come from json.loads, so an object is a dict and a number an int or a float: plain type checks,
# several times cheaper than the Mapping ABC's isinstance (a shape calls these a dozen times per record).
_NUMBERS = (int, float)  # by type(), so True and False stay booleans


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _scalar(value: Any) -> Any:
    """Numbers become text (an id or a time sent as a number); everything else is the contract's to judge."""
    return str(value) if type(value) in _NUMBERS else value


def _first(*values: Any) -> Any:
    for value in values:
        if value is not None and value != "":
            return str(value) if type(value) in _NUMBERS else value
    return None


def _join(*parts: Any) -> Any:
    """Non-empty text parts joined by a newline; a part that is not text is handed on for the contract to reject."""
    texts = [part for part in parts if part not in (None, "")]
    if any(not isinstance(part, str) for part in texts):
        return next(part for part in texts if not isinstance(part, str))
    return "\n".join(texts) or None


def fcm_v1(obj: Mapping[str, Any]) -> Fields | None:
    """Firebase Cloud Messaging HTTP v1: {"message": {"notification", "android", "apns", "webpush", "data"}}.

    Each field from the first platform block that has it: the common notification, Android's, Web Push's, the
    data payload, then the APNs alert (an object, or a string that is the body).
    """
    message = obj.get("message")
    if not isinstance(message, dict):
        return None
    shown, android = _object(message.get("notification")), _object(_object(message.get("android")).get("notification"))
    web, data = _object(_object(message.get("webpush")).get("notification")), _object(message.get("data"))
    alert = _object(_object(_object(message.get("apns")).get("payload")).get("aps")).get("alert")
    alert_body, alert = (alert, {}) if isinstance(alert, str) else (None, _object(alert))
    blocks = (shown, android, web, data, alert)
    return {"title": _first(*(block.get("title") for block in blocks)),
            "body": _first(*(block.get("body") for block in blocks), alert_body),
            "app": _first(data.get("app")), "sender": _first(data.get("sender")),
            "id": _first(data.get("id"), message.get("name")), "timestamp": _first(data.get("timestamp"))}


def _notification_block(obj: Mapping[str, Any]) -> Fields | None:
    shown = obj.get("notification")
    if not isinstance(shown, dict):
        return None
    data = _object(obj.get("data"))
    return {"title": _first(shown.get("title")), "body": _first(shown.get("body"), data.get("body")),
            "app": _first(data.get("app")), "sender": _first(data.get("sender")),
            "id": _first(data.get("id"), shown.get("tag")), "timestamp": _first(data.get("timestamp"))}


def fcm_legacy(obj: Mapping[str, Any]) -> Fields | None:
    """FCM's legacy HTTP API: {"notification": {...}, "data": {...}} with any of its routing keys (``to``, ...)."""
    return _notification_block(obj) if not FCM_LEGACY_KEYS.isdisjoint(obj) else None


def webpush_notification(obj: Mapping[str, Any]) -> Fields | None:
    """Web Push as a {"notification": {"title", "body", ...}} object (Angular's service worker sends this)."""
    return _notification_block(obj)


def fcm_data(obj: Mapping[str, Any]) -> Fields | None:
    """An FCM data-only message: {"data": {"title": ..., "body": ...}} (all values strings)."""
    data = obj.get("data")
    if "title" in obj or not isinstance(data, dict) or not ("title" in data or "body" in data):
        return None  # a flat notification's own title is never replaced by a data payload's
    return {field: _first(data.get(field)) for field in FIELDS}


def apns(obj: Mapping[str, Any]) -> Fields | None:
    """Apple Push: {"aps": {"alert": {"title", "subtitle", "body"}}} or {"aps": {"alert": "text"}}.

    The subtitle is the first line of the body (Apple shows it between the title and the body).
    """
    aps = obj.get("aps")
    if not isinstance(aps, dict):
        return None
    alert = aps.get("alert")
    if not isinstance(alert, dict):
        return {"body": _first(alert), "id": _first(obj.get("id")), "app": _first(obj.get("app"))}
    return {"title": _first(alert.get("title")), "body": _join(alert.get("subtitle"), alert.get("body")),
            "id": _first(obj.get("id")), "app": _first(obj.get("app")), "sender": _first(obj.get("sender"))}


def android(obj: Mapping[str, Any]) -> Fields | None:
    """Android's notification listener: {packageName, title, text, subText, bigText}.

    packageName is the app; bigText (the expanded text) is the body, with text first when bigText does not
    already hold it; subText (an account or a conversation summary) is the sender.
    """
    text, big = obj.get("text"), obj.get("bigText")
    body = big if isinstance(big, str) and isinstance(text, str) and text in big else _join(text, big)
    return {"app": _first(obj.get("packageName"), obj.get("app")), "title": _first(obj.get("title")),
            "body": body, "sender": _first(obj.get("subText"), obj.get("sender")),
            "id": _first(obj.get("id"), obj.get("key")), "timestamp": _first(obj.get("postTime"), obj.get("when"))}


def webpush_options(obj: Mapping[str, Any]) -> Fields | None:
    """Web Push in the Notification API's constructor shape: {"title", "options": {"body", "tag", ...}}."""
    options = obj.get("options")
    if not isinstance(options, dict):
        return None
    return {"title": _first(obj.get("title")), "body": _first(options.get("body")),
            "id": _first(options.get("tag"), obj.get("id")), "app": _first(obj.get("app")),
            "timestamp": _first(options.get("timestamp"))}


def flat(obj: Mapping[str, Any]) -> Fields:
    """The worker's own shape (and Web Push's plain {"title", "body"}): the fields as they are."""
    return {field: obj.get(field) for field in FIELDS if field in obj}


# (label, keys of which one must be present, shape), most specific first; flat is the last resort
_SHAPES: tuple[tuple[str, frozenset[str], Shape], ...] = (
    ("fcm_v1", frozenset({"message"}), fcm_v1),
    ("apns", frozenset({"aps"}), apns),
    ("fcm_legacy", frozenset({"notification"}), fcm_legacy),
    ("webpush", frozenset({"notification"}), webpush_notification),
    ("webpush", frozenset({"options"}), webpush_options),
    ("android", frozenset({"packageName", "bigText", "text"}), android),
    ("fcm_data", frozenset({"data"}), fcm_data),
)


def _has_text(fields: Fields) -> bool:
    return fields.get("title") not in (None, "") or fields.get("body") not in (None, "")


def detect(obj: Mapping[str, Any]) -> tuple[str, Fields]:
    """The envelope of a JSON object (by its keys, see the module's docstring) and the fields it gives."""
    if "body" not in obj:
        for name, keys, shape in _SHAPES:
            if not keys.isdisjoint(obj) and (fields := shape(obj)) is not None and _has_text(fields):
                return name, fields
    return FLAT, flat(obj)

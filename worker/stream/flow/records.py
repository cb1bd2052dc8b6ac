"""What the worker writes to Kafka (pure): result keys and the headers of a dead letter.

A dead letter carries the input's key and value bytes unchanged, the input's own headers, and these
headers (UTF-8 text), so a consumer of the dead-letter topic can find and replay the original:

    notif.error.reason      machine-readable reason (a contract reject reason, undecodable_record, inference_error)
    notif.error.message     what was wrong, for a person
    notif.source.topic      where the input was read
    notif.source.partition
    notif.source.offset

A dead letter the broker refused with its value (worker/stream/flow/publish_policy.py) is published without
it and without the input's headers, adding:

    notif.error.value_omitted   "true"
    notif.error.original_size   the input value's size in bytes
    notif.error.publish_error   what the broker or producer said
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from worker.contract import Notification

REASON_HEADER = "notif.error.reason"
MESSAGE_HEADER = "notif.error.message"
TOPIC_HEADER = "notif.source.topic"
PARTITION_HEADER = "notif.source.partition"
OFFSET_HEADER = "notif.source.offset"
VALUE_OMITTED_HEADER = "notif.error.value_omitted"
ORIGINAL_SIZE_HEADER = "notif.error.original_size"
PUBLISH_ERROR_HEADER = "notif.error.publish_error"
INFERENCE_ERROR = "inference_error"
PUBLISH_REJECTED = "publish_rejected"  # a result the broker refused for good: its input is dead-lettered
UNDECODABLE_RECORD = "undecodable_record"  # the client cannot decode it (kafka/undecodable.py)

# Headers we set replace same-named input headers (a re-processed dead letter keeps one of each).
_OWN_PREFIXES = ("notif.error.", "notif.source.")
MAX_MESSAGE_CHARS = 1000


def result_key(input_key: bytes | None, notification: Notification) -> bytes | None:
    """The output key: the input's key, or the notification's id when the key is empty."""
    if input_key:
        return input_key
    if notification.id:
        return notification.id.encode("utf-8")
    return None


def oversize(key: bytes | None, headers: Sequence[tuple[str, bytes]], *, max_key_bytes: int,
             max_header_bytes: int) -> str | None:
    """Why a record's key or headers are over their limits (NOTIF_MAX_KEY_BYTES, NOTIF_MAX_HEADER_BYTES), or None."""
    if key is not None and len(key) > max_key_bytes:
        return f"the key is {len(key)} bytes; the limit is {max_key_bytes}"
    if headers:
        size = sum(len(name.encode("utf-8", "surrogateescape")) + len(value or b"") for name, value in headers)
        if size > max_header_bytes:
            return f"the headers are {size} bytes; the limit is {max_header_bytes}"
    return None


def dead_letter_headers(
    input_headers: Sequence[tuple[str, bytes]], *, reason: str, message: str, topic: str, partition: int,
    offset: int,
) -> list[tuple[str, bytes]]:
    """The input's headers followed by ours (message cut to MAX_MESSAGE_CHARS characters)."""
    kept = [(name, value) for name, value in input_headers if not name.startswith(_OWN_PREFIXES)]
    ours = [
        (REASON_HEADER, reason),
        (MESSAGE_HEADER, message[:MAX_MESSAGE_CHARS]),
        (TOPIC_HEADER, topic),
        (PARTITION_HEADER, str(partition)),
        (OFFSET_HEADER, str(offset)),
    ]
    return kept + [(name, value.encode("utf-8")) for name, value in ours]


ENRICHED_KEY = "notif_triage"  # NOTIF_OUTPUT_FORMAT=enriched: where the classification goes in the input's object


def header_names(setting: str) -> frozenset[str]:
    """NOTIF_PROPAGATE_HEADERS as lower-case names (header names compare case-insensitively, as W3C's do)."""
    return frozenset(name.strip().lower() for name in setting.split(",") if name.strip())


def propagated(headers: Sequence[tuple[str, bytes]], names: frozenset[str]) -> list[tuple[str, bytes]]:
    """The input's headers a result carries on (trace context by default), in their order."""
    if not headers or not names:
        return []
    return [(name, value) for name, value in headers if name.lower() in names]


def enriched_value(source: bytes | str, result: bytes) -> bytes:
    """The input's JSON object as received with the result's JSON added under ENRICHED_KEY; text becomes
    {"text": ...}.

    The input's bytes are kept as they are (key order, spacing, number forms) and the key appended before the
    closing brace: no parse, no re-serialisation. Only an input that may already hold the key (its name appears, or
    one of its letters is escaped) is parsed and written again, with its own value replaced.
    """
    if isinstance(source, str):
        return b'{"text":' + json.dumps(source, ensure_ascii=False).encode("utf-8") + _ENRICHED_MEMBER + result + b"}"
    if _ENRICHED_NAME not in source and (b"\\u" not in source or _ESCAPED_LETTER.search(source) is None):
        head = source.strip()[:-1]  # a JSON object (the reader made sure): all but its closing brace
        return head + (_ENRICHED_MEMBER if head.rstrip() != b"{" else _ENRICHED_MEMBER[1:]) + result + b"}"
    document = json.loads(source)
    document[ENRICHED_KEY] = json.loads(result)
    # ASCII: a lone surrogate escape (\ud800) in a field the reader ignores stays an escape, never a UnicodeError
    return json.dumps(document, separators=(",", ":")).encode("ascii")


_ENRICHED_NAME = ENRICHED_KEY.encode()
_ENRICHED_MEMBER = b',"' + _ENRICHED_NAME + b'":'
# A \u escape of one of ENRICHED_KEY's letters (hex digits in either case): a spelling of the key without its
# plain name has one. (Case-sensitive classes: an IGNORECASE pattern costs ~4 us per record, this ~0.1.)
_ESCAPED_LETTER = re.compile(rb"\\u00(?:" + "|".join(
    "".join(f"[{digit}{digit.upper()}]" if digit.isalpha() else digit for digit in f"{ord(letter):02x}")
    for letter in sorted(set(ENRICHED_KEY))).encode() + rb")")

"""Result keys and dead-letter headers."""

from __future__ import annotations

from worker.contract import Notification
from worker.stream.flow.records import MAX_MESSAGE_CHARS, dead_letter_headers, oversize, result_key


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

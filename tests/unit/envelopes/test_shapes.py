"""Detection (shapes.detect): a flat notification with extra fields stays flat; an envelope without text hands on."""

from __future__ import annotations

from typing import Any

import pytest

from worker.envelopes.shapes import detect

EXTRA_FIELDS: list[dict[str, Any]] = [
    {"message": {"id": 5}}, {"message": {"notification": {"title": "other"}}}, {"aps": {"badge": 1}},
    {"notification": {"silent": True}}, {"notification": {"title": "other"}}, {"options": {"silent": True}},
    {"text": "other"}, {"bigText": None}, {"packageName": "com.example"}, {"data": {"title": "other"}},
    {"to": "device", "data": {"k": "v"}},
]


@pytest.mark.parametrize("extra", EXTRA_FIELDS, ids=[next(iter(e)) + str(i) for i, e in enumerate(EXTRA_FIELDS)])
def test_a_flat_notification_with_a_body_stays_flat_whatever_else_it_holds(extra: dict[str, Any]) -> None:
    assert detect({"title": "Build failed", "body": "main is red", **extra}) == (
        "flat", {"title": "Build failed", "body": "main is red"})


@pytest.mark.parametrize("obj", [
    {"title": "Build failed", "message": {"id": 5}},  # an unrelated "message" object: not FCM
    {"title": "Build failed", "aps": {"badge": 1}},  # an APNs badge-only push has no text
    {"title": "Build failed", "notification": {"silent": True}},
])
def test_an_envelope_that_yields_no_text_hands_on_to_the_flat_shape(obj: dict[str, Any]) -> None:
    assert detect(obj) == ("flat", {"title": "Build failed"})


def test_a_title_never_gives_way_to_a_data_payload() -> None:
    assert detect({"title": "T", "data": {"body": "x"}}) == ("flat", {"title": "T"})


def test_fcm_v1_reads_each_platform_block_in_order() -> None:
    message = {"webpush": {"notification": {"title": "W", "body": "web"}},
               "apns": {"payload": {"aps": {"alert": {"title": "A", "body": "apple"}}}}}
    assert detect({"message": message})[1]["title"] == "W"
    _, fields = detect({"message": {"apns": {"payload": {"aps": {"alert": "apple text"}}}, "data": {"id": 3}}})
    assert fields["body"] == "apple text" and fields["id"] == "3"  # FCM data values are strings; a number too


def test_fcm_legacy_needs_a_routing_key_else_it_is_web_push() -> None:
    shown = {"notification": {"title": "T", "body": "B"}}
    assert detect({**shown, "to": "device"})[0] == "fcm_legacy"
    assert detect({**shown, "data": {"app": "Shop"}})[0] == "fcm_legacy"
    assert detect(shown)[0] == "webpush"


def test_android_text_alone_is_a_listener_record() -> None:
    # {"title", "text"} without a body: Android's listener (the body is the text), not a title-only flat record
    assert detect({"title": "Mum", "text": "call me"}) == (
        "android", {"app": None, "title": "Mum", "body": "call me", "sender": None, "id": None, "timestamp": None})

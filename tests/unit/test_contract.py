"""The contract: every rejection reason, plain text, rendering, answers."""

from __future__ import annotations

import json
import random

import pytest

from worker.contract import (
    FOLDERS,
    REJECT_REASONS,
    SYSTEM_PROMPT,
    AnswerParseError,
    ClassificationResult,
    Confidence,
    InvalidNotification,
    Notification,
    decode_notification,
    format_answer,
    notification_from_fields,
    parse_answer,
    render_user_message,
    valid_answers,
)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (None, "empty"),
        (b"   \n\t ", "empty"),
        (b"\xff\xfe bad", "invalid_utf8"),
        (b'{"title": "x"', "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'[{"title": "x"}]', "not_an_object"),
        (b"[broken", "invalid_json"),
        (b"42", "not_an_object"),
        (b"-3.5", "not_an_object"),
        (b"null", "not_an_object"),
        (b"true", "not_an_object"),
        (b'"just a json string"', "not_an_object"),
        (b'{"title": 5, "body": "x"}', "wrong_type"),
        (b'{"body": ["a"]}', "wrong_type"),
        (b'{"title": "t", "sender": {"name": "x"}}', "wrong_type"),
        (b'{"id": "1", "app": "Slack"}', "missing_text"),
        (b'{"title": "  ", "body": ""}', "missing_text"),
        (b"{}", "missing_text"),
    ],
)
def test_rejections_carry_a_reason_and_a_message(raw: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidNotification) as info:
        decode_notification(raw)
    assert info.value.reason == reason
    assert info.value.reason in REJECT_REASONS
    assert info.value.message


def test_too_large_is_rejected_by_the_byte_limit() -> None:
    raw = json.dumps({"body": "x" * 200}).encode()
    with pytest.raises(InvalidNotification) as info:
        decode_notification(raw, max_bytes=100)
    assert info.value.reason == "too_large"
    assert decode_notification(raw, max_bytes=len(raw)).body == "x" * 200


def test_every_reason_is_reachable() -> None:
    samples = [b"", b"x" * 70000, b"\xff", b"{", b"[]", b'{"title": 1}', b'{"app": "a"}']
    seen = set()
    for raw in samples:
        with pytest.raises(InvalidNotification) as info:
            decode_notification(raw)
        seen.add(info.value.reason)
    assert seen == set(REJECT_REASONS)


def test_plain_text_is_the_body() -> None:
    assert decode_notification("Your build failed 🚨\n".encode()) == Notification(body="Your build failed 🚨")


def test_object_fields_are_read_and_unknown_fields_ignored() -> None:
    raw = b'{"id": "n1", "app": "Gmail", "title": "Hi", "body": "b", "sender": "Ann", "timestamp": "t", "x": 1}'
    n = decode_notification(raw)
    assert (n.id, n.app, n.title, n.body, n.sender, n.timestamp) == ("n1", "Gmail", "Hi", "b", "Ann", "t")


def test_null_fields_are_allowed() -> None:
    assert decode_notification(b'{"title": null, "body": "x"}').body == "x"


def test_user_message_is_deterministic_and_ordered() -> None:
    n = Notification(id="7", app=" Slack ", sender="Bob", title="Deploy", body="prod is down", timestamp="now")
    text, truncated = render_user_message(n)
    assert text == "App: Slack\nFrom: Bob\nTitle: Deploy\nBody: prod is down"
    assert not truncated
    assert render_user_message(Notification(body="only body"))[0] == "Body: only body"


def test_system_prompt_names_every_label_and_the_answer_format() -> None:
    for folder in FOLDERS:
        assert f"- {folder}:" in SYSTEM_PROMPT
    assert 'Respond with ONLY a JSON object: {"folder": "<folder>", "priority": <1-3>}' in SYSTEM_PROMPT


def test_answers_round_trip() -> None:
    answers = valid_answers()
    assert len(answers) == 12
    for folder, priority, text in answers:
        assert text == format_answer(folder, priority)
        assert parse_answer(text) == (folder, priority)
    assert format_answer("Work", 3) == '{"folder": "Work", "priority": 3}'


@pytest.mark.parametrize(
    "text",
    [
        "Work, 3",
        '{"folder": "Work"}',
        '{"folder": "Work", "priority": 3, "extra": 1}',
        '{"folder": "Spam", "priority": 3}',
        '{"folder": "Work", "priority": 4}',
        '{"folder": "Work", "priority": "3"}',
        '{"folder": "Work", "priority": true}',
        '["Work", 3]',
        '{"folder": "Work", "priority": 3} trailing',
    ],
)
def test_parse_answer_is_strict(text: str) -> None:
    with pytest.raises(AnswerParseError):
        parse_answer(text)


def test_result_serialises_to_one_json_object() -> None:
    result = ClassificationResult(
        id="a", folder="Work", priority=3, priority_label="High",
        confidence=Confidence(folder=0.9, priority=0.8), decoding="constrained", truncated=False, model="m",
    )
    data = json.loads(result.to_json_bytes())
    assert data["folder"] == "Work" and data["priority"] == 3 and data["contract_version"] == "1.0"
    assert data["confidence"] == {"folder": 0.9, "priority": 0.8}


def test_the_fast_json_path_decodes_as_the_careful_one() -> None:
    # decode_notification parses well-formed objects with pydantic's JSON parser; everything else (and
    # anything that parser refuses) takes json.loads + validation. Both must give the same notification.
    rng = random.Random(3)
    texts = ["hi", "café ☕", "東京", "emoji 🎉", 'quote " and \\ backslash', "tab\tnew\nline", " spaced "]
    raws = []
    for _ in range(300):
        fields = {name: rng.choice([*texts, None]) for name in rng.sample(
            ["id", "app", "title", "body", "sender", "timestamp", "extra"], k=rng.randint(1, 6))}
        fields["title"] = rng.choice(texts)
        raws.append(json.dumps(fields, ensure_ascii=rng.random() < 0.5).encode())
    raws += [b' \n{"title": "padded"}\t', b'{"title": "x", "title": "last wins"}', b'{"body": "a\\ud800b"}']
    for raw in raws:
        careful = notification_from_fields(json.loads(raw.decode().strip()))
        assert decode_notification(raw) == careful, raw

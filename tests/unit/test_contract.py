"""The contract: every rejection reason, plain text, rendering, answers."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.contract import (
    FOLDERS,
    MAX_JSON_DEPTH,
    REJECT_REASONS,
    SYSTEM_PROMPT,
    AnswerParseError,
    ClassificationResult,
    Confidence,
    InvalidNotification,
    Notification,
    compatible_contract,
    decode_notification,
    format_answer,
    notification_from_fields,
    parse_answer,
    render_user_message,
    valid_answers,
)
from worker.envelopes.read import read_notification


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
        (b"[" * 60000, "too_deep"),
        (b" \n" + b"[" * 5000 + b"]" * 5000, "too_deep"),
        (b'{"title": "x", "ignored": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}", "too_deep"),
        (b'{"title": "x", "ignored": ' + b"[" * 65 + b"]" * 65 + b"}", "too_deep"),
        (b'{"id": "\\ud800", "title": "x"}', "invalid_utf8"),
        (b'{"body": "a\\udc00b"}', "invalid_utf8"),
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
    """Through the worker's reader (worker/envelopes/read.py), which adds the frame's two reasons."""
    samples = [b"", b"x" * 70000, b"\xff", b"{", b"[]", b'{"title": 1}', b'{"app": "a"}', b"[" * 100,
               b"\x00\x00\x00\x00\x07\x02avro-bytes", b"\x01\x02binary"]
    seen = set()
    for raw in samples:
        read = read_notification(raw)
        assert read.notification is None and read.error is not None and read.envelope == "invalid", raw
        seen.add(read.error.reason)
    assert seen == set(REJECT_REASONS) - {"undecodable"}  # the safety net below: no known input reaches it


def test_an_error_no_rule_foresaw_is_still_invalid_notification() -> None:
    with pytest.raises(InvalidNotification) as info:
        decode_notification(memoryview(b'{"title": "x"}'))  # type: ignore[arg-type]  # no .lstrip()
    assert info.value.reason == "undecodable" and "AttributeError" in info.value.message


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
    assert data["folder"] == "Work" and data["priority"] == 3 and data["contract_version"] == "1.1"
    assert data["confidence"] == {"folder": 0.9, "priority": 0.8}
    assert list(data) == ["id", "folder", "priority", "priority_label", "confidence", "decoding", "truncated",
                          "model", "adapter_id", "review", "contract_version"]
    assert data["adapter_id"] is None and data["review"] is False


def test_adapters_of_the_same_major_version_are_compatible() -> None:
    assert compatible_contract("1.0") and compatible_contract("1.1") and compatible_contract("1.7")
    assert not compatible_contract("0.1") and not compatible_contract("2.0") and not compatible_contract(None)


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
    raws += [b' \n{"title": "padded"}\t', b'{"title": "x", "title": "last wins"}']
    for raw in raws:
        careful = notification_from_fields(json.loads(raw.decode().strip()))
        assert decode_notification(raw) == careful, raw


def test_nesting_up_to_the_limit_is_fine_and_brackets_inside_strings_do_not_count() -> None:
    nested = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert decode_notification(b'{"title": "x", "ignored": ' + nested[1:-1] + b"}").title == "x"
    brackets = json.dumps({"title": "[" * 5000, "body": "{" * 5000 + '\\"' + "[" * 100}).encode()
    assert decode_notification(brackets).title == "[" * 5000


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=2048),
    st.text(max_size=512).map(str.encode),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                 lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
                     ["id", "title", "body", "app", "sender", "x"]), inner, max_size=4),
                 max_leaves=60).map(lambda value: json.dumps(value).encode()),
    st.integers(min_value=1, max_value=3000).map(lambda depth: b"[" * depth + b"]" * (depth % 7)),
))
def test_decoding_arbitrary_bytes_gives_a_notification_or_invalid_notification(raw: bytes) -> None:
    try:
        notification = decode_notification(raw, max_bytes=4096)
    except InvalidNotification as exc:
        assert exc.reason in REJECT_REASONS and exc.message
        return
    assert isinstance(notification, Notification)
    assert (notification.title or "").strip() or (notification.body or "").strip()
    for value in notification.model_dump().values():
        assert value is None or isinstance(value.encode("utf-8"), bytes)  # encodable text ("" is too)

"""trainer.data: both formats, every bad line reported with its number and reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.data import (
    DataError,
    LineError,
    Problem,
    describe_problems,
    label_mix,
    notification_from_user_message,
    parse_line,
    read_dataset,
)
from worker.contract import SYSTEM_PROMPT, Notification, chat_messages, format_answer, render_user_message


def chat(user: str, answer: str, system: str = SYSTEM_PROMPT) -> str:
    messages = chat_messages(user, answer)
    messages[0]["content"] = system
    return json.dumps({"messages": messages})


def test_chat_line() -> None:
    example = parse_line(chat("App: Slack\nFrom: Ana\nTitle: PR\nBody: please review", format_answer("Work", 2)))
    assert (example.folder, example.priority) == ("Work", 2)
    assert example.notification == Notification(app="Slack", sender="Ana", title="PR", body="please review")


def test_flat_line() -> None:
    line = json.dumps({"id": "7", "app": "Chase", "title": "Fraud alert", "body": "Card blocked", "folder": "Alerts",
                       "priority": 3, "extra": 1})
    example = parse_line(line)
    assert (example.folder, example.priority, example.notification.id) == ("Alerts", 3, "7")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"title": "x", "priority": 1}), "folder must be one of"),
        (json.dumps({"title": "x", "folder": "Spam", "priority": 1}), "folder must be one of"),
        (json.dumps({"title": "x", "folder": "Work", "priority": "2"}), "priority must be the integer"),
        (json.dumps({"title": "x", "folder": "Work", "priority": True}), "priority must be the integer"),
        (json.dumps({"title": "x", "folder": "Work", "priority": 4}), "priority must be the integer"),
        (json.dumps({"app": "x", "folder": "Work", "priority": 1}), "non-empty title or body"),
        (json.dumps({"title": 5, "folder": "Work", "priority": 1}), "fields must be strings"),
        (json.dumps({"messages": "hi"}), "exactly three turns"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}] * 3}), "expected a system turn"),
        (chat("Title: x", "Work, 2"), "assistant answer"),
        (chat("Title: x", '{"folder": "Work", "priority": 5}'), "assistant answer"),
        (chat("   ", format_answer("Work", 1)), "user turn"),
    ],
)
def test_bad_lines_have_reasons(line: str, reason: str) -> None:
    with pytest.raises(LineError, match=reason):
        parse_line(line)


def test_read_dataset_reports_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    good = json.dumps({"title": "Sale", "folder": "Promotions", "priority": 1})
    path.write_text("\n".join([good, "oops", "", chat("Title: hi", format_answer("Personal", 1)), "[]"]) + "\n")
    dataset = read_dataset(path)
    assert len(dataset.examples) == 2
    assert [p.line for p in dataset.problems] == [2, 5]
    assert "2 examples, 2 bad lines skipped" in dataset.summary()
    assert read_dataset(path, limit=1).examples == dataset.examples[:1]


def test_unusable_files_raise(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_dataset(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text("nope\n")
    with pytest.raises(DataError, match="no valid example"):
        read_dataset(tmp_path / "bad.jsonl")


def test_user_message_reads_back_into_fields() -> None:
    notification = Notification(app="Mail", sender="Mom", title="Dinner", body="line one\nline two\nTitle: not a field")
    message, _ = render_user_message(notification)
    assert notification_from_user_message(message) == notification
    assert notification_from_user_message("just some text") == Notification(body="just some text")


def test_describe_problems_is_bounded() -> None:
    problems = [Problem(i, "bad") for i in range(1, 31)]
    lines = describe_problems(problems)
    assert lines[0] == "line 1: bad" and lines[-1] == "... and 10 more bad lines" and len(lines) == 21


def test_label_mix() -> None:
    examples = [parse_line(json.dumps({"title": "x", "folder": f, "priority": p}))
                for f, p in [("Work", 1), ("Work", 2), ("Alerts", 3), ("Personal", 1)]]
    mix = label_mix(examples)
    assert mix["folder"]["Work"] == 0.5 and mix["priority"]["1"] == 0.5 and mix["folder"]["Promotions"] == 0.0


def test_exported_notifications_in_any_envelope_train_without_conversion(tmp_path: Path) -> None:
    """The trainer reads its lines through the worker's envelope reader (worker/envelopes/read.py)."""
    lines = [
        {"message": {"notification": {"title": "Sale", "body": "50% off"}}, "folder": "Promotions", "priority": 1},
        {"packageName": "com.whatsapp", "title": "Mum", "text": "call me", "bigText": "call me when you can",
         "folder": "Personal", "priority": 2},
        {"aps": {"alert": {"title": "Card used", "body": "$40"}}, "folder": "Alerts", "priority": 3},
    ]
    path = tmp_path / "exported.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    dataset = read_dataset(path)
    assert dataset.problems == []
    assert [(e.notification.title, e.notification.body, e.folder, e.priority) for e in dataset.examples] == [
        ("Sale", "50% off", "Promotions", 1), ("Mum", "call me when you can", "Personal", 2),
        ("Card used", "$40", "Alerts", 3)]
    assert dataset.examples[1].notification.app == "com.whatsapp"

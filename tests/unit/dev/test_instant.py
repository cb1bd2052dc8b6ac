"""The model-free classifier: deterministic, one valid result per notification."""

from __future__ import annotations

from worker.contract import FOLDERS, PRIORITIES, Notification
from worker.dev.instant import InstantClassifier


def test_same_text_same_answer_and_valid_labels() -> None:
    classifier = InstantClassifier()
    notes = [Notification(id=f"n{i}", title=f"title {i}", body="body") for i in range(50)]
    first = classifier.classify(notes)
    again = classifier.classify(list(reversed(notes)))[::-1]
    assert [r.to_json_bytes() for r in first] == [r.to_json_bytes() for r in again]
    assert {r.folder for r in first} <= set(FOLDERS) and len({r.folder for r in first}) > 1
    assert {r.priority for r in first} <= set(PRIORITIES)
    assert [r.id for r in first] == [n.id for n in notes]
    assert all(r.model == "instant" for r in first)


def test_token_count_grows_with_the_text() -> None:
    classifier = InstantClassifier()
    short = classifier.count_tokens(Notification(title="hi"))
    long = classifier.count_tokens(Notification(title="hi", body="word " * 400))
    assert long > short + 300

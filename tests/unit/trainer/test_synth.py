"""trainer.synth: label mix, determinism, distinct messages, noise, files in the chat format."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from trainer.data import parse_line
from trainer.synth import SynthError, generate_examples, split_size, write_split
from worker.contract import SYSTEM_PROMPT, decode_notification, render_user_message
from worker.synth.sampler import iter_raw_notifications

FOLDER_MIX = {"Work": 0.40, "Personal": 0.27, "Promotions": 0.18, "Alerts": 0.15}
PRIORITY_MIX = {1: 0.51, 2: 0.28, 3: 0.21}


@pytest.fixture(scope="module")
def examples() -> list:
    return generate_examples(16_001, seed=0)


def test_label_mix_is_the_references(examples: list) -> None:
    n = len(examples)
    folders = Counter(e.folder for e in examples)
    priorities = Counter(e.priority for e in examples)
    for folder, share in FOLDER_MIX.items():
        assert folders[folder] / n == pytest.approx(share, abs=0.015)
    for priority, share in PRIORITY_MIX.items():
        assert priorities[priority] / n == pytest.approx(share, abs=0.015)


def test_every_cell_is_populated_and_messages_are_distinct(examples: list) -> None:
    cells = Counter((e.folder, e.priority) for e in examples)
    assert len(cells) == 12
    messages = [render_user_message(e.notification)[0] for e in examples]
    assert len(set(messages)) == len(messages)


def test_many_apps_senders_and_noise(examples: list) -> None:
    apps = {e.notification.app for e in examples}
    senders = {e.notification.sender for e in examples}
    assert len(apps) > 60 and len(senders) > 80
    assert sum(e.notification.title is None for e in examples) > 500  # empty titles
    assert sum(e.notification.body is None for e in examples) > 300  # empty bodies
    assert sum(e.notification.app is None for e in examples) > 300
    assert any((e.notification.title or "").isupper() for e in examples)
    assert any((e.notification.body or "").endswith("...") for e in examples)
    assert all((e.notification.title or e.notification.body) for e in examples)


def test_deterministic_by_seed() -> None:
    assert generate_examples(300, seed=5) == generate_examples(300, seed=5)
    assert generate_examples(300, seed=5) != generate_examples(300, seed=6)


def test_write_split_writes_chat_files_that_read_back(tmp_path: Path) -> None:
    counts = write_split(tmp_path, n=400, seed=1)
    assert counts == {"train.jsonl": 300, "test.jsonl": 100}
    lines = (tmp_path / "train.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant"]
    assert record["messages"][0]["content"] == SYSTEM_PROMPT
    for line in lines:
        example = parse_line(line)
        user = json.loads(line)["messages"][1]["content"]
        assert render_user_message(example.notification)[0] == user  # the user turn reads back exactly


def test_default_split_is_the_references() -> None:
    assert split_size(16_001, None) == 12_000
    assert split_size(400, None) == 300
    with pytest.raises(SynthError):
        split_size(100, 100)


def test_raw_notifications_are_valid_worker_input() -> None:
    stream = iter_raw_notifications(seed=3)
    for _ in range(200):
        raw = next(stream)
        assert "folder" not in raw and "priority" not in raw
        notification = decode_notification(json.dumps(raw).encode())
        assert notification.id == raw["id"]

"""Synthetic labelled notifications with the reference's label mix, deterministic by seed.

`generate_examples` draws a (folder, priority) cell from the reference's mix, one scenario of that
cell from trainer.synth_catalog, fills its slots and adds noise (typos, emoji, shouting, lower case,
cut text, empty title or body, missing app or sender). Every example's rendered user message is
unique, so the test split never repeats a training message. `iter_raw_notifications` yields the same
notifications as plain dicts without labels for the worker's demo producer.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from trainer import TrainerError
from trainer.data import Example
from trainer.synth_catalog import FOLDER_MIX, PRIORITY_GIVEN_FOLDER, SCENARIOS, SLOTS, Scenario
from worker.contract import Notification, chat_messages, format_answer, render_user_message

DEFAULT_TRAIN_SIZE = 12_000  # the reference's split: 12,000 training examples, the rest for testing
MAX_DRAWS_PER_EXAMPLE = 50  # retries to find an unseen message before giving up

_SLOT = re.compile(r"\{(\w+)\}")
_EMOJI = ("🙏", "👀", "✅", "🎉", "⚠️", "📦", "💸", "🔥", "😅", "❤️", "👉", "⏰")
_START = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)

_NUMBERS: dict[str, Callable[[random.Random], str]] = {
    "num": lambda r: str(r.randint(10, 9999)),
    "money": lambda r: f"{r.choice('$€£')}{r.randint(5, 900)}.{r.randint(0, 99):02d}",
    "pct": lambda r: f"{r.choice((10, 15, 20, 25, 30, 40, 50, 60, 70))}%",
    "time": lambda r: f"{r.randint(7, 21)}:{r.choice(('00', '15', '30', '45'))}",
    "code": lambda r: f"{r.randint(0, 999_999):06d}",
    "hex": lambda r: f"{r.getrandbits(28):07x}",
    "last4": lambda r: f"{r.randint(0, 9999):04d}",
    "tracking": lambda r: f"1Z{r.getrandbits(40):010X}",
}


class SynthError(TrainerError):
    """The requested synthetic set cannot be produced (bad size, or too few distinct messages)."""


def _cells() -> tuple[list[tuple[str, int]], list[float]]:
    cells, weights = [], []
    for folder, share in FOLDER_MIX.items():
        for priority, given in zip((1, 2, 3), PRIORITY_GIVEN_FOLDER[folder], strict=True):
            cells.append((folder, priority))
            weights.append(share * given)
    return cells, weights


def _fill(template: str, rng: random.Random) -> str:
    """Replace every {slot}, recursively (a slot value may hold slots of its own)."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in _NUMBERS:
            return _NUMBERS[name](rng)
        return _fill(rng.choice(SLOTS[name]), rng)

    return _SLOT.sub(one, template)


def _typo(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    index = rng.randrange(len(words))
    word = words[index]
    if len(word) > 3:
        cut = rng.randrange(1, len(word) - 1)
        words[index] = word[:cut] + word[cut + 1] + word[cut] + word[cut + 2:]
    return " ".join(words)


def _add_noise(fields: dict[str, str], rng: random.Random) -> dict[str, str]:
    """Real notification streams are messy; each kind of mess has its own small probability."""
    if rng.random() < 0.10:
        fields["body"] = _typo(fields["body"], rng)
    if rng.random() < 0.12:
        emoji = rng.choice(_EMOJI)
        fields["title"] = f"{emoji} {fields['title']}" if rng.random() < 0.5 else f"{fields['title']} {emoji}"
    if rng.random() < 0.04:
        fields["title"] = fields["title"].upper()
    if rng.random() < 0.05:
        fields["body"] = fields["body"].lower()
    if rng.random() < 0.05 and len(fields["body"]) > 24:
        fields["body"] = fields["body"][: rng.randint(16, len(fields["body"]) - 4)] + "..."
    blank = rng.random()
    if blank < 0.07:
        fields["title"] = ""
    elif blank < 0.12:
        fields["body"] = ""
    for key in ("app", "sender"):
        if rng.random() < 0.05:
            fields[key] = ""
    return fields


def _draw(scenario: Scenario, rng: random.Random, index: int) -> Notification:
    sender = _fill(rng.choice(scenario.senders), rng)
    fields = {
        "app": _fill(rng.choice(scenario.apps), rng),
        "sender": sender,
        "title": _fill(rng.choice(scenario.titles).replace("{sender}", sender), rng),
        "body": _fill(rng.choice(scenario.bodies), rng),
    }
    fields = _add_noise(fields, rng)
    stamp = _START + timedelta(seconds=index * 37 + rng.randrange(37))
    return Notification(
        id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        timestamp=stamp.isoformat().replace("+00:00", "Z"),
        **{key: value or None for key, value in fields.items()},
    )


def generate_examples(n: int, *, seed: int = 0) -> list[Example]:
    """``n`` labelled examples, all with distinct user messages, the same for the same seed."""
    if n < 1:
        raise SynthError(f"n must be positive, got {n}")
    rng = random.Random(seed)
    cells, weights = _cells()
    by_cell = {cell: [s for s in SCENARIOS if (s.folder, s.priority) == cell] for cell in cells}
    seen: set[str] = set()
    examples: list[Example] = []
    while len(examples) < n:
        folder, priority = rng.choices(cells, weights)[0]
        for _ in range(MAX_DRAWS_PER_EXAMPLE):
            notification = _draw(rng.choice(by_cell[(folder, priority)]), rng, len(examples))
            message, _ = render_user_message(notification)
            if message and message not in seen:
                break
        else:
            raise SynthError(f"ran out of distinct {folder}/{priority} messages after {len(examples)}")
        seen.add(message)
        examples.append(Example(notification, folder, priority))
    return examples


def iter_raw_notifications(*, seed: int = 0) -> Iterator[dict[str, str]]:
    """An endless stream of raw notifications (JSON-ready dicts, no labels) for demos and load tests."""
    rng = random.Random(seed)
    cells, weights = _cells()
    index = 0
    while True:
        folder, priority = rng.choices(cells, weights)[0]
        scenario = rng.choice([s for s in SCENARIOS if (s.folder, s.priority) == (folder, priority)])
        notification = _draw(scenario, rng, index)
        yield notification.model_dump(exclude_none=True)
        index += 1


def chat_record(example: Example) -> dict[str, list[dict[str, str]]]:
    """The example in the reference's chat format (system, user, assistant)."""
    message, _ = render_user_message(example.notification)
    return {"messages": chat_messages(message, format_answer(example.folder, example.priority))}


def split_size(n: int, train_size: int | None) -> int:
    """How many of ``n`` examples go to train.jsonl: 12,000 by default, 3/4 of smaller sets."""
    size = train_size if train_size is not None else min(DEFAULT_TRAIN_SIZE, n * 3 // 4)
    if not 0 < size < n:
        raise SynthError(f"the training split must leave both files non-empty: {size} of {n}")
    return size


def write_split(
    out_dir: Path, *, n: int = 16_001, seed: int = 0, train_size: int | None = None
) -> dict[str, int]:
    """Write train.jsonl and test.jsonl in chat format; returns the line count of each."""
    examples = generate_examples(n, seed=seed)
    cut = split_size(n, train_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, part in (("train.jsonl", examples[:cut]), ("test.jsonl", examples[cut:])):
        with (out_dir / name).open("w", encoding="utf-8") as handle:
            for example in part:
                handle.write(json.dumps(chat_record(example), ensure_ascii=False) + "\n")
        counts[name] = len(part)
    return counts

"""Seeded synthetic notifications with the reference's label mix, drawn from the catalogue.

`draw_labelled` draws a (folder, priority) cell from the reference's mix, one scenario of that cell from
worker.synth.catalog, fills its slots and adds noise (typos, emoji, shouting, lower case, cut text, empty
title or body, missing app or sender); every drawn notification's rendered user message is unique.
`iter_raw_notifications` yields the same kind of notifications as plain dicts without labels, for the
demo producer and the benchmarks.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from worker.contract import Notification, render_user_message
from worker.synth.catalog import FOLDER_MIX, PRIORITY_GIVEN_FOLDER, SCENARIOS, SLOTS, Scenario

MAX_DRAWS_PER_EXAMPLE = 50  # retries to find an unseen message before giving up

_SLOT = re.compile(r"\{(\w+)\}")
_EMOJI = ("🙏", "👀", "✅", "🎉", "⚠️", "📦", "💸", "🔥", "😅", "❤️", "👉", "⏰")
_START = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)


class SamplingError(ValueError):
    """The requested sample cannot be drawn (bad size, or too few distinct messages in a cell)."""


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


def draw_labelled(n: int, *, seed: int = 0) -> list[tuple[Notification, str, int]]:
    """``n`` (notification, folder, priority) triples with distinct user messages, the same for the same seed."""
    if n < 1:
        raise SamplingError(f"n must be positive, got {n}")
    rng = random.Random(seed)
    cells, weights = _cells()
    by_cell = {cell: [s for s in SCENARIOS if (s.folder, s.priority) == cell] for cell in cells}
    seen: set[str] = set()
    drawn: list[tuple[Notification, str, int]] = []
    while len(drawn) < n:
        folder, priority = rng.choices(cells, weights)[0]
        for _ in range(MAX_DRAWS_PER_EXAMPLE):
            notification = _draw(rng.choice(by_cell[(folder, priority)]), rng, len(drawn))
            message, _ = render_user_message(notification)
            if message and message not in seen:
                break
        else:
            raise SamplingError(f"ran out of distinct {folder}/{priority} messages after {len(drawn)}")
        seen.add(message)
        drawn.append((notification, folder, priority))
    return drawn


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

"""Labelled notification files: read chat or flat JSONL, validate every line, report bad lines.

Two formats, told apart line by line:
- chat (the reference's files): {"messages": [system, user, assistant]}. The user turn is read back
  into notification fields (it is the contract's `Label: value` rendering); the system turn is
  replaced by the contract's at training time; the assistant turn must be a valid answer.
- flat: notification fields (app, sender, title, body, id, timestamp) plus "folder" and "priority".
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer import TrainerError
from worker.contract import (
    FOLDERS,
    PRIORITIES,
    AnswerParseError,
    InvalidNotification,
    Notification,
    notification_from_fields,
    parse_answer,
)
from worker.envelopes.read import notification_from_object

# The contract's user-message labels, in the order render_user_message writes them.
FIELD_OF_LABEL = {"App": "app", "From": "sender", "Title": "title", "Body": "body"}
ROLES = ("system", "user", "assistant")
MAX_REPORTED_PROBLEMS = 20  # the CLI prints this many bad lines, then a count


class DataError(TrainerError):
    """A data file is missing, unreadable or holds no valid example."""


class LineError(TrainerError):
    """One line of a data file is not a valid example; the message is the reason."""


@dataclass(frozen=True)
class Example:
    """One labelled notification."""

    notification: Notification
    folder: str
    priority: int


@dataclass(frozen=True)
class Problem:
    """A rejected line: 1-based line number and reason."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class Dataset:
    """The valid examples of a file and the problems of the lines that were rejected."""

    path: Path
    examples: list[Example]
    problems: list[Problem]

    def summary(self) -> str:
        bad = f", {len(self.problems)} bad lines skipped" if self.problems else ""
        return f"{self.path}: {len(self.examples)} examples{bad}"


def notification_from_user_message(text: str) -> Notification:
    """Read a rendered user message (`App: …`, `From: …`, `Title: …`, `Body: …`) back into fields.

    Lines that do not start a later field continue the current one (multi-line bodies). A message
    without any of the labels is taken whole as the body.
    """
    fields: dict[str, str] = {}
    order = list(FIELD_OF_LABEL)
    current: str | None = None
    for line in text.split("\n"):
        label, sep, value = line.partition(": ")
        starts_field = bool(sep) and label in order and (
            current is None or order.index(label) > order.index(current)
        )
        if starts_field:
            current = label
            fields[current] = value
        elif current is not None:
            fields[current] += "\n" + line
        else:
            return notification_from_fields({"body": text})
    return notification_from_fields({FIELD_OF_LABEL[label]: value for label, value in fields.items()})


def parse_chat(record: dict[str, Any]) -> Example:
    messages = record["messages"]
    if not isinstance(messages, list) or len(messages) != len(ROLES):
        raise LineError("messages must be a list of exactly three turns: system, user, assistant")
    for turn, role in zip(messages, ROLES, strict=True):
        if not isinstance(turn, dict) or turn.get("role") != role or not isinstance(turn.get("content"), str):
            raise LineError(f"expected a {role} turn with string content, got {str(turn)[:60]}")
    try:
        folder, priority = parse_answer(messages[2]["content"])
    except AnswerParseError as exc:
        raise LineError(f"assistant answer: {exc}") from exc
    try:
        notification = notification_from_user_message(messages[1]["content"])
    except InvalidNotification as exc:
        raise LineError(f"user turn: {exc.message}") from exc
    return Example(notification, folder, priority)


def parse_flat(record: dict[str, Any]) -> Example:
    folder, priority = record.get("folder"), record.get("priority")
    if folder not in FOLDERS:
        raise LineError(f"folder must be one of {', '.join(FOLDERS)}, got {folder!r}")
    if isinstance(priority, bool) or priority not in PRIORITIES:
        raise LineError(f"priority must be the integer 1, 2 or 3, got {priority!r}")
    fields = {key: value for key, value in record.items() if key not in ("folder", "priority")}
    try:  # any envelope the worker reads (FCM, APNs, Android, CloudEvents, ...): exported notifications train as is
        _, notification = notification_from_object(fields)
    except InvalidNotification as exc:
        raise LineError(exc.message) from exc
    return Example(notification, folder, int(priority))


def parse_line(text: str) -> Example:
    """One JSONL line in either format, or LineError."""
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise LineError(f"not JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise LineError(f"expected a JSON object, got {type(record).__name__}")
    return parse_chat(record) if "messages" in record else parse_flat(record)


def read_dataset(path: Path, *, limit: int | None = None) -> Dataset:
    """Every line validated; blank lines skipped; stops after ``limit`` valid examples."""
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    examples: list[Example] = []
    problems: list[Problem] = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, text in enumerate(handle, start=1):
                if limit is not None and len(examples) >= limit:
                    break
                if not text.strip():
                    continue
                try:
                    examples.append(parse_line(text))
                except LineError as exc:
                    problems.append(Problem(number, str(exc)))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text: {exc}") from exc
    if not examples:
        detail = "; ".join(describe_problems(problems)[:5])
        raise DataError(f"{path} holds no valid example ({len(problems)} bad lines: {detail})")
    return Dataset(path, examples, problems)


def describe_problems(problems: Sequence[Problem]) -> list[str]:
    """Printable lines: the first MAX_REPORTED_PROBLEMS problems, then how many more there are."""
    lines = [str(problem) for problem in problems[:MAX_REPORTED_PROBLEMS]]
    if len(problems) > MAX_REPORTED_PROBLEMS:
        lines.append(f"... and {len(problems) - MAX_REPORTED_PROBLEMS} more bad lines")
    return lines


def label_mix(examples: Sequence[Example]) -> dict[str, dict[str, float]]:
    """Share of each folder and each priority, for plans and reports."""
    n = len(examples)
    folders = Counter(e.folder for e in examples)
    priorities = Counter(e.priority for e in examples)
    return {
        "folder": {f: round(folders[f] / n, 4) for f in FOLDERS},
        "priority": {str(p): round(priorities[p] / n, 4) for p in PRIORITIES},
    }

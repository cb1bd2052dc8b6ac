"""Synthetic labelled training data with the reference's label mix, deterministic by seed.

The notifications come from worker.synth (the catalogue and the sampler, shared with the worker's demo and
benchmarks); this module labels them as training examples and writes the train/test split in chat format.
"""

from __future__ import annotations

import json
from pathlib import Path

from trainer import TrainerError
from trainer.data import Example
from worker.contract import chat_messages, format_answer, render_user_message
from worker.synth.sampler import SamplingError, draw_labelled

DEFAULT_TRAIN_SIZE = 12_000  # the reference's split: 12,000 training examples, the rest for testing


class SynthError(TrainerError):
    """The requested synthetic set cannot be produced (bad size, or too few distinct messages)."""


def generate_examples(n: int, *, seed: int = 0) -> list[Example]:
    """``n`` labelled examples, all with distinct user messages, the same for the same seed."""
    try:
        drawn = draw_labelled(n, seed=seed)
    except SamplingError as exc:
        raise SynthError(str(exc)) from exc
    return [Example(notification, folder, priority) for notification, folder, priority in drawn]


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

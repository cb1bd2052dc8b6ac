"""A model-free classifier for plumbing: a deterministic answer from a hash of the notification's text.

It implements NotificationClassifier, so the pipeline benchmark and the broker tests exercise every
part of the worker except the model; `notif-worker serve --instant-classifier` uses it too.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence

from worker.contract import (
    FOLDERS,
    PRIORITIES,
    PRIORITY_LABELS,
    ClassificationResult,
    Confidence,
    Notification,
)

# Roughly what the chat template adds around the user message, and bytes per token of English text;
# only the token-budget batching reads these, so "about right" is enough.
PROMPT_OVERHEAD_TOKENS = 200
BYTES_PER_TOKEN = 4


class InstantClassifier:
    """Answers at once (or after ``delay_s`` per batch, to imitate model time) without a model."""

    def __init__(self, *, delay_s: float = 0.0, name: str = "instant") -> None:
        self.name = name
        self.delay_s = delay_s

    def count_tokens(self, notification: Notification) -> int:
        characters = len(notification.title or "") + len(notification.body or "")
        return PROMPT_OVERHEAD_TOKENS + characters // BYTES_PER_TOKEN + 1

    def classify(self, notifications: Sequence[Notification]) -> list[ClassificationResult]:
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        return [self.answer(notification) for notification in notifications]

    def answer(self, notification: Notification) -> ClassificationResult:
        """The result for one notification: the same text always gets the same answer."""
        n = notification
        digest = zlib.crc32(f"{n.app}\x1f{n.sender}\x1f{n.title}\x1f{n.body}".encode("utf-8", "surrogatepass"))
        folder = FOLDERS[digest % len(FOLDERS)]
        priority = PRIORITIES[(digest >> 8) % len(PRIORITIES)]
        return ClassificationResult(
            id=notification.id, folder=folder, priority=priority, priority_label=PRIORITY_LABELS[priority],
            confidence=_CERTAIN, decoding="constrained", truncated=False, model=self.name,
        )


_CERTAIN = Confidence(folder=1.0, priority=1.0)


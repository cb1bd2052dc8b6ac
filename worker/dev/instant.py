"""A model-free classifier for plumbing: a deterministic answer from a hash of the notification's text.

It implements NotificationClassifier, so the pipeline benchmark and the broker tests exercise every
part of the worker except the model; `notif-worker serve --instant-classifier` uses it too.
"""

from __future__ import annotations

import threading
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
from worker.protocol import Collect

# Roughly what the chat template adds around the user message, and bytes per token of English text;
# only the token-budget batching reads these, so "about right" is enough.
PROMPT_OVERHEAD_TOKENS = 200
BYTES_PER_TOKEN = 4


class InstantClassifier:
    """Answers at once, or after ``delay_s`` per batch of an imitation GPU, without a model.

    Like a GPU's stream, the imitation device runs launched batches one after another: a batch launched while
    another computes is ready ``delay_s`` after that one, and launching never waits (PipelinedClassifier).
    """

    def __init__(self, *, delay_s: float = 0.0, name: str = "instant") -> None:
        self.name = name
        self.delay_s = delay_s
        self._device = threading.Lock()
        self._free_at = 0.0  # time.monotonic() when the imitation device has finished what was launched

    def count_tokens(self, notification: Notification) -> int:
        characters = len(notification.title or "") + len(notification.body or "")
        return PROMPT_OVERHEAD_TOKENS + characters // BYTES_PER_TOKEN + 1

    def classify(self, notifications: Sequence[Notification]) -> list[ClassificationResult]:
        return self.launch(notifications)()

    def launch(self, notifications: Sequence[Notification]) -> Collect:
        results = [self.answer(notification) for notification in notifications]
        if self.delay_s <= 0:
            return lambda: results
        with self._device:
            ready = self._free_at = max(time.monotonic(), self._free_at) + self.delay_s

        def collect() -> list[ClassificationResult]:
            time.sleep(max(0.0, ready - time.monotonic()))
            return results

        return collect

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


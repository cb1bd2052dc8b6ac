"""The classifier protocol: what the stream, the offline command and the benchmarks call, and the model implements.

It lives at the top of the package, beside the contract, so that `worker.stream` can name a classifier
without importing `worker.model` (and with it torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from worker.contract import ClassificationResult, Notification


class NotificationClassifier(Protocol):
    """What the streaming worker, the offline command and the benchmarks call. Knows nothing of Kafka."""

    name: str

    def count_tokens(self, notification: Notification) -> int:
        """Prompt tokens this notification will cost (for token-budget batching)."""
        ...

    def classify(self, notifications: Sequence[Notification]) -> list[ClassificationResult]:
        """One result per notification, in input order."""
        ...

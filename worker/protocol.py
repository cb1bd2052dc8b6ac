"""The classifier protocol: what the stream, the offline command and the benchmarks call, and the model implements.

It lives at the top of the package, beside the contract, so that `worker.stream` can name a classifier
without importing `worker.model` (and with it torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

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


@runtime_checkable
class SwappableClassifier(Protocol):
    """A classifier whose adapter can be replaced while it serves (worker/stream/adapter_watch.py calls it)."""

    @property
    def adapter_id(self) -> str | None:
        """The serving adapter's id (directory name @ weights hash); None for the bare base model."""
        ...

    def swap_adapter(self, path: str) -> str:
        """Load the adapter at ``path`` beside the serving one, then serve it; returns its adapter_id.

        Raises on any failure, leaving the old adapter serving. Runs on the inference thread, between batches.
        """
        ...


@runtime_checkable
class ShadowClassifier(Protocol):
    """A classifier holding a candidate adapter beside the serving one (worker/stream/shadow.py calls it)."""

    def classify_shadow(self, notifications: Sequence[Notification]) -> list[ClassificationResult]:
        """The candidate adapter's results for these notifications, in input order."""
        ...

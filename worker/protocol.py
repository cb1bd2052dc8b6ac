"""The classifier protocol: what the stream, the offline command and the benchmarks call, and the model implements.

It lives at the top of the package, beside the contract, so that `worker.stream` can name a classifier
without importing `worker.model` (and with it torch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol, TypeVar, runtime_checkable

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


Collect = Callable[[], list[ClassificationResult]]  # waits for a launched batch's results and returns them


@runtime_checkable
class PipelinedClassifier(Protocol):
    """A classifier that can start a batch before the one before it is read back, as a GPU's stream runs
    launched work in order: the inference loop launches batch n+1 while batch n computes."""

    def launch(self, notifications: Sequence[Notification]) -> Collect:
        """Start classifying and return at once with a call that waits for the results (one per notification,
        in input order). ``classify(x)`` is ``launch(x)()``.

        Launches run on the inference thread, in order; the returned call may run on another thread, and
        results are labelled with the adapter that served at launch. Either may raise what classify raises.
        """
        ...


def launcher(classifier: NotificationClassifier) -> Callable[[Sequence[Notification]], Collect]:
    """How to start a batch: the classifier's own launch, or (not pipelined) classify it right away."""
    if isinstance(classifier, PipelinedClassifier):
        return classifier.launch

    def launch(notifications: Sequence[Notification]) -> Collect:
        results = classifier.classify(notifications)
        return lambda: results

    return launch


T = TypeVar("T")


def classify_ahead(classifier: NotificationClassifier, batches: Iterable[tuple[T, Sequence[Notification]]]
                   ) -> Iterator[tuple[T, list[ClassificationResult]]]:
    """(tag, results) batch by batch, in order; each batch is launched before the one before it is read back,
    so a GPU computes batch n while the caller prepares batch n+1 and handles batch n-1's results."""
    launch = launcher(classifier)
    pending: tuple[T, Collect] | None = None
    for tag, notifications in batches:
        collect = launch(notifications)
        if pending is not None:
            yield pending[0], pending[1]()
        pending = tag, collect
    if pending is not None:
        yield pending[0], pending[1]()


@runtime_checkable
class SwappableClassifier(Protocol):
    """A classifier whose adapter can be replaced while it serves (stream/lifecycle/adapter_watch.py calls it)."""

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
    """A classifier holding a candidate adapter beside the serving one (worker/stream/lifecycle/shadow.py calls it)."""

    def classify_shadow(self, notifications: Sequence[Notification]) -> list[ClassificationResult]:
        """The candidate adapter's results for these notifications, in input order."""
        ...

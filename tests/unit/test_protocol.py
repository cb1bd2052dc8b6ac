"""classify_ahead: each batch launched before the one before it is read back; tags and results stay paired."""

from __future__ import annotations

from collections.abc import Sequence

from worker.contract import ClassificationResult, Notification
from worker.dev.instant import InstantClassifier
from worker.protocol import Collect, PipelinedClassifier, classify_ahead


class Recording(InstantClassifier):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def launch(self, notifications: Sequence[Notification]) -> Collect:
        name = notifications[0].id
        self.events.append(f"launch {name}")
        collect = super().launch(notifications)

        def read() -> list[ClassificationResult]:
            self.events.append(f"read {name}")
            return collect()

        return read


class ClassifyOnly:
    """A classifier that only classifies (no launch): it is called once per batch, in order."""

    name = "plain"

    def __init__(self) -> None:
        self.inner = InstantClassifier()
        self.calls: list[str | None] = []

    def count_tokens(self, notification: Notification) -> int:
        return 1

    def classify(self, notifications: Sequence[Notification]) -> list[ClassificationResult]:
        self.calls.append(notifications[0].id)
        return self.inner.classify(notifications)


def batches(count: int) -> list[tuple[int, list[Notification]]]:
    return [(tag, [Notification(id=f"b{tag}-{i}", title=f"t {tag} {i}") for i in range(3)]) for tag in range(count)]


def test_each_batch_is_launched_before_the_previous_one_is_read_back() -> None:
    classifier = Recording()
    assert isinstance(classifier, PipelinedClassifier)
    out = list(classify_ahead(classifier, batches(3)))
    assert classifier.events == ["launch b0-0", "launch b1-0", "read b0-0", "launch b2-0", "read b1-0", "read b2-0"]
    assert [tag for tag, _ in out] == [0, 1, 2]
    for tag, results in out:
        assert [r.id for r in results] == [f"b{tag}-{i}" for i in range(3)]


def test_a_classifier_without_launch_is_classified_batch_by_batch() -> None:
    classifier = ClassifyOnly()
    assert not isinstance(classifier, PipelinedClassifier)
    out = list(classify_ahead(classifier, batches(2)))
    assert classifier.calls == ["b0-0", "b1-0"]
    assert [[r.id for r in results] for _, results in out] == [[f"b{t}-{i}" for i in range(3)] for t in range(2)]
    assert list(classify_ahead(classifier, [])) == []

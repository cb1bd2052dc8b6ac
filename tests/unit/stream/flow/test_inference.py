"""The inference thread and the split-and-retry policy for model failures."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator, Sequence

import pytest

from tests.support import PoisonClassifier
from worker.contract import ClassificationResult, Notification
from worker.dev.instant import InstantClassifier
from worker.stream.flow.model_calls import InferenceFailure, InferenceThread, ResultCountMismatch, classify_with_split


@pytest.fixture
def thread() -> Iterator[InferenceThread]:
    runner = InferenceThread()
    yield runner
    runner.stop()


async def test_a_failing_item_is_isolated_and_the_rest_classified(thread: InferenceThread,
                                                                  poison_classifier: PoisonClassifier) -> None:
    classifier = poison_classifier
    notes = [Notification(id=str(i), title="poison" if i == 5 else f"ok {i}") for i in range(8)]
    errors: list[tuple[int, str]] = []
    outcomes = await classify_with_split(thread, classifier, notes, lambda n, e: errors.append((n, str(e))))
    assert isinstance(outcomes[5], InferenceFailure)
    assert outcomes[5].message == "RuntimeError: CUDA out of memory"
    good = [o for i, o in enumerate(outcomes) if i != 5]
    assert all(isinstance(o, ClassificationResult) for o in good)
    assert [o.id for o in good if isinstance(o, ClassificationResult)] == [str(i) for i in range(8) if i != 5]
    assert [n for n, _ in errors] == [8, 4, 2, 1]  # halves down to the single culprit
    assert classifier.threads == {"notif-inference"}


async def test_a_good_batch_is_one_call(thread: InferenceThread, poison_classifier: PoisonClassifier) -> None:
    classifier = poison_classifier
    outcomes = await classify_with_split(thread, classifier, [Notification(title="a")] * 5, lambda n, e: None)
    assert classifier.sizes == [5] and len(outcomes) == 5


async def test_a_wrong_result_count_is_a_failure(thread: InferenceThread) -> None:
    class Short(InstantClassifier):
        def classify(self, notifications: Sequence[Notification]) -> list[ClassificationResult]:
            return super().classify(notifications)[:-1]

    errors: list[BaseException] = []
    outcomes = await classify_with_split(thread, Short(), [Notification(title="a")] * 2,
                                         lambda n, e: errors.append(e))
    assert all(isinstance(o, InferenceFailure) for o in outcomes)
    assert all(isinstance(e, ResultCountMismatch) for e in errors)


async def test_thread_runs_calls_in_order_off_the_loop(thread: InferenceThread) -> None:
    seen: list[int] = []

    def call(i: int) -> int:
        seen.append(i)
        return i

    futures = [thread.submit(functools.partial(call, i)) for i in range(20)]
    assert [await f for f in futures] == list(range(20))
    assert seen == list(range(20))
    assert await thread.submit(threading.current_thread) is not threading.current_thread()

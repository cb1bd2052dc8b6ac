"""The adapter watcher: a moved symlink swaps once, a failed target keeps the old adapter until it moves or SIGHUP."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from worker.observe.metrics import Metrics
from worker.stream.flow.model_calls import InferenceThread
from worker.stream.lifecycle.adapter_watch import AdapterWatcher


class Swapper:
    """Records what it is asked to serve; refuses any directory named 'bad' (as a failed load would)."""

    adapter_id: str | None = None

    def __init__(self) -> None:
        self.calls: list[str] = []

    def swap_adapter(self, path: str) -> str:
        self.calls.append(path)
        if Path(path).name == "bad":
            raise RuntimeError("no notif_contract.json")
        self.adapter_id = Path(path).name + "@0"
        return self.adapter_id


def point(link: Path, target: Path) -> None:
    fresh = link.with_name("next")
    fresh.symlink_to(target)
    os.replace(fresh, link)


@pytest.fixture
def thread() -> Iterator[InferenceThread]:
    runner = InferenceThread()
    yield runner
    runner.stop()


async def test_swaps_when_the_target_moves_and_keeps_the_old_one_on_failure(tmp_path: Path,
                                                                           thread: InferenceThread) -> None:
    for name in ("v1", "v2", "bad"):
        (tmp_path / name).mkdir()
    link = tmp_path / "current"
    link.symlink_to(tmp_path / "v1")
    registry = CollectorRegistry()
    swapper, shown = Swapper(), []
    watcher = AdapterWatcher(str(link), 0.0, thread, swapper, Metrics(registry),
                             lambda path, adapter_id: shown.append((path, adapter_id)))
    assert await watcher.check() is None and swapper.calls == []  # unchanged: nothing loaded
    point(link, tmp_path / "v2")
    assert await watcher.check() == "swapped"
    assert watcher.serving == str(tmp_path / "v2") and shown == [(str(tmp_path / "v2"), "v2@0")]
    point(link, tmp_path / "bad")
    assert await watcher.check() == "failed"
    assert await watcher.check() is None  # the same failed target is not retried at every poll
    assert watcher.serving == str(tmp_path / "v2") and len(swapper.calls) == 2
    watcher.check_now()  # SIGHUP: retry it
    assert await watcher.check() == "failed" and len(swapper.calls) == 3

    def count(outcome: str) -> float:
        return registry.get_sample_value("notif_adapter_reloads_total", {"outcome": outcome}) or 0.0

    assert (count("swapped"), count("failed")) == (1, 2)

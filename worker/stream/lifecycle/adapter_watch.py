"""The adapter watcher: when NOTIF_ADAPTER resolves somewhere new, have the classifier swap to it between batches.

NOTIF_ADAPTER may be a directory or a symlink to one (``adapters/current -> v2``): promoting a model is
moving the symlink. Every NOTIF_ADAPTER_POLL_S seconds, or at once on SIGHUP, the watcher resolves it;
when the target changed it submits ``swap_adapter`` to the inference thread, which runs it between two
batches, so the worker never leaves the consumer group and no message waits anywhere but in the queue.
A failed load keeps the old adapter serving (a warning, notif_adapter_reloads_total{outcome="failed"});
the same target is not retried until it changes again or SIGHUP asks.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from contextlib import suppress

import structlog

from worker.observe.metrics import Metrics
from worker.protocol import SwappableClassifier
from worker.stream.flow.model_calls import InferenceThread, describe

log = structlog.get_logger("worker.adapter_watch")


class AdapterWatcher:
    """Polls (and answers SIGHUP for) where the adapter setting points; swaps through the inference thread."""

    def __init__(self, adapter: str, poll_s: float, thread: InferenceThread, classifier: SwappableClassifier,
                 metrics: Metrics, on_swapped: Callable[[str, str], None]) -> None:
        self.adapter = adapter
        self.poll_s = poll_s
        self.thread = thread
        self.classifier = classifier
        self.metrics = metrics
        self._on_swapped = on_swapped  # (resolved path, adapter_id): the model info follows the swap
        self.serving = resolve(adapter)
        self._tried: str | None = self.serving  # the last target attempted: a failed one waits for a change or SIGHUP
        self._now = asyncio.Event()

    def check_now(self) -> None:
        """SIGHUP: check at once, and retry a target that failed before."""
        self._tried = None
        self._now.set()

    async def run(self) -> None:
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._now.wait(), self.poll_s if self.poll_s > 0 else None)
            self._now.clear()
            await self.check()

    async def check(self) -> str | None:
        """Swap when the adapter resolves somewhere new; returns the outcome (None: nothing changed)."""
        target = resolve(self.adapter)
        if target == self.serving or target == self._tried:
            return None
        self._tried = target
        log.info("adapter_changed", adapter=self.adapter, serving=self.serving, target=target)
        try:
            adapter_id = await self.thread.submit(lambda: self.classifier.swap_adapter(target))
        except Exception as exc:
            self.metrics.adapter_reloads.labels(outcome="failed").inc()
            log.warning("adapter_reload_failed", target=target, error=describe(exc), serving=self.serving)
            return "failed"
        self.serving = target
        self.metrics.adapter_reloads.labels(outcome="swapped").inc()
        self._on_swapped(target, adapter_id)
        log.info("adapter_swapped", target=target, adapter_id=adapter_id)
        return "swapped"


def resolve(adapter: str) -> str:
    """Where the adapter setting points now (symlinks followed; a hub id stays as it is)."""
    return os.path.realpath(adapter) if os.path.exists(adapter) else adapter

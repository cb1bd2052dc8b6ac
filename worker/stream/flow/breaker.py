"""The model's circuit breaker: a model that fails every call holds the stream instead of draining it to the DLQ.

A batch counts as failed when every notification in it failed even alone (classify_with_split) and a
probe notification known to be fine fails too, so no neighbour succeeded. After NOTIF_BREAKER_FAILURES
such batches in a row the breaker opens: intake pauses every partition, /readyz fails with the reason,
notif_breaker_open is 1, and the held batch is retried every NOTIF_BREAKER_RETRY_S (the probe); once it
has been open NOTIF_BREAKER_UNHEALTHY_S, /healthz fails too so the pod is restarted. Held items are
retried, never dead-lettered; the first batch that succeeds closes the breaker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import suppress

import structlog

from worker.observe.health import HealthState
from worker.observe.metrics import Metrics

PROBLEM = "breaker"
FIRST_RETRY_S = 0.1  # below the threshold the held batch is retried soon: a transient failure costs little

log = structlog.get_logger("worker.breaker")


class CircuitBreaker:
    """Consecutive wholly failed batches; open at the threshold, closed by the next success."""

    def __init__(self, *, failures: int, retry_s: float, unhealthy_s: float, metrics: Metrics,
                 health: HealthState, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = failures
        self.retry_s = retry_s
        self.unhealthy_s = unhealthy_s
        self.metrics = metrics
        self.health = health
        self._clock = clock
        self.consecutive = 0
        self._opened_at: float | None = None

    @property
    def open(self) -> bool:
        return self._opened_at is not None

    def failed(self, error: str) -> None:
        """A batch failed entirely (no neighbour succeeded); opens the breaker at the threshold."""
        self.consecutive += 1
        if self.consecutive < self.threshold:
            log.warning("model_failing", consecutive=self.consecutive, threshold=self.threshold, error=error)
            return
        if self._opened_at is None:
            self._opened_at = self._clock()
            self.metrics.breaker_open.set(1)
            log.error("breaker_opened", consecutive=self.consecutive, error=error, retry_every_s=self.retry_s,
                      note="consumption paused; held messages are retried, not dead-lettered")
        self.health.set_problem(PROBLEM, f"the model's circuit breaker is open: {self.consecutive} batches "
                                f"failed in a row, last: {error}", fatal_after_s=self.unhealthy_s)

    def succeeded(self) -> None:
        """A model call worked: close the breaker."""
        if self._opened_at is not None:
            log.info("breaker_closed", open_for_s=round(self._clock() - self._opened_at, 1),
                     failed_batches=self.consecutive)
            self._opened_at = None
            self.metrics.breaker_open.set(0)
            self.health.clear_problem(PROBLEM)
        self.consecutive = 0

    async def wait_before_retry(self, stop: asyncio.Event) -> None:
        """Wait until the held batch should be tried again (or until ``stop`` is set)."""
        delay = self.retry_s if self.open else min(self.retry_s, FIRST_RETRY_S * 2 ** (self.consecutive - 1))
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)

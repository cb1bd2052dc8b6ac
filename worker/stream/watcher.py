"""The watcher: once a second, probe the broker and refresh the gauges (assignment, lag, readiness)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog
from aiokafka.structs import TopicPartition

from worker.observe.health import HealthState
from worker.observe.metrics import Metrics
from worker.stream.kafka_io import BrokerUnavailable, KafkaClients
from worker.stream.offsets import OffsetTracker

WATCH_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 3.0

log = structlog.get_logger("worker.watcher")


class Watcher:
    """Broker reachability into the health state; assignment, lag and readiness into the metrics."""

    def __init__(self, kafka: KafkaClients, tracker: OffsetTracker[TopicPartition], metrics: Metrics,
                 health: HealthState, checks: Sequence[Callable[[], None]] = ()) -> None:
        self.kafka = kafka
        self.checks = checks  # other parts' health checks that need a clock, not an event (a publish stall)
        self.tracker = tracker
        self.metrics = metrics
        self.health = health

    async def run(self) -> None:
        while True:
            await self._probe()
            self.show_assignment(len(self.kafka.assignment()))
            self._update_lag()
            for check in self.checks:
                check()
            self.metrics.ready.set(1 if self.health.ready()[0] else 0)
            await asyncio.sleep(WATCH_INTERVAL_S)

    def show_assignment(self, count: int) -> None:
        self.health.assigned_partitions = count
        self.metrics.assigned_partitions.set(count)

    async def _probe(self) -> None:
        try:
            await self.kafka.probe(timeout_s=PROBE_TIMEOUT_S)
        except BrokerUnavailable as exc:
            self.metrics.broker_errors.inc()
            if self.health.broker_reachable:
                log.warning("broker_unreachable", error=str(exc))
            self.health.broker_reachable = False
            return
        if not self.health.broker_reachable:
            log.info("broker_reachable")
        self.health.broker_reachable = True

    def _update_lag(self) -> None:
        for tp in self.tracker.partitions():
            state, high = self.tracker.get(tp), self.kafka.highwater(tp)
            if state is not None and state.next_offset is not None and high is not None:
                lag = max(0, high - state.next_offset)
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)

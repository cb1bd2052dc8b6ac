"""The watcher: once a second, probe the broker and refresh the gauges (assignment, lag, readiness).

Lag is the broker's end offset minus the committed offset of each owned partition, asked of the broker
each time, so it keeps counting while the partition is paused and it sees a commit that stalls; beside
it, the age of each partition's oldest unacknowledged record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from contextlib import suppress

import structlog
from aiokafka.structs import TopicPartition

from worker.observe.health import HealthState
from worker.observe.metrics import Metrics
from worker.stream.flow.offsets import OffsetTracker, PartitionOffsets
from worker.stream.kafka.clients import KafkaClients
from worker.stream.kafka.errors import BrokerUnavailable

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
        # where each assignment began (the committed offset a previous owner left), until we commit
        self._starts: dict[TopicPartition, tuple[PartitionOffsets, int]] = {}
        self._shown: set[TopicPartition] = set()

    async def run(self) -> None:
        while True:
            await self._probe()
            self.show_assignment(len(self.kafka.assignment()))
            await self._update_lag()
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

    async def _update_lag(self) -> None:
        states = {tp: state for tp in self.tracker.partitions() if (state := self.tracker.get(tp)) is not None}
        for tp in self._shown - states.keys():  # revoked: its series go away
            with suppress(KeyError):
                self.metrics.oldest_unacked_age.remove(tp.topic, str(tp.partition))
        self._shown &= states.keys()
        self._starts = {tp: start for tp, start in self._starts.items() if tp in states}
        if not states:
            return
        try:  # bounded: the health checks after it run each second even when the broker hangs
            ends, committed = await asyncio.wait_for(self._offsets(states), PROBE_TIMEOUT_S)
        except (BrokerUnavailable, TimeoutError):
            return  # the probe says so; the gauges keep their last values
        now = time.monotonic()
        for tp, state in states.items():
            labels = (tp.topic, str(tp.partition))
            if tp in ends:
                self.metrics.consumer_lag.labels(*labels).set(max(0, ends[tp] - committed[tp]))
            since = state.oldest_unacked_since()
            self.metrics.oldest_unacked_age.labels(*labels).set(0.0 if since is None else now - since)
            self._shown.add(tp)

    async def _offsets(self, states: dict[TopicPartition, PartitionOffsets]
                       ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        ends = await self.kafka.end_offsets(set(states))
        return ends, {tp: await self._committed(tp, state) for tp, state in states.items()}

    async def _committed(self, tp: TopicPartition, state: PartitionOffsets) -> int:
        """Our last commit of this assignment, else the offset the assignment started from."""
        if state.committed is not None:
            return state.committed
        cached = self._starts.get(tp)
        if cached is None or cached[0] is not state:
            cached = self._starts[tp] = (state, await self.kafka.start_position(tp))
        return cached[1]

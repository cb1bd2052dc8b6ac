"""The committer: commits each partition's acknowledged prefix on a timer, and settles partitions in a rebalance.

An offset is committed only when it and every offset before it in its partition have an acknowledged
result or dead letter (worker/stream/flow/offsets.py). On revocation the partition's work is drained and
committed within NOTIF_SHUTDOWN_TIMEOUT_S; a partition whose membership is already lost is never committed.
Commits that keep failing for NOTIF_COMMIT_STALL_S (no group ACL, a coordinator that does not answer) make
/readyz fail with the reason and set notif_commit_failing, which an alert watches; the next success clears both.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress

import structlog
from aiokafka.structs import TopicPartition

from worker.observe.health import HealthState
from worker.observe.metrics import Metrics
from worker.settings import Settings
from worker.stream.flow.batch_queue import BatchQueue
from worker.stream.flow.offsets import OffsetTracker, PartitionOffsets
from worker.stream.flow.outbox import Outbox
from worker.stream.flow.work import Work
from worker.stream.kafka.clients import KafkaClients
from worker.stream.kafka.errors import BrokerUnavailable, CommitRejected

MIN_COMMIT_INTERVAL_S = 0.01

log = structlog.get_logger("worker.committer")


class Committer:
    """The commit loop and the rebalance callbacks (called by the supervisor inside aiokafka's rebalance)."""

    def __init__(self, settings: Settings, kafka: KafkaClients, tracker: OffsetTracker[TopicPartition],
                 queue: BatchQueue[Work], outbox: Outbox, metrics: Metrics, health: HealthState,
                 revoking: set[TopicPartition], halted: set[TopicPartition]) -> None:
        self.settings = settings
        self.kafka = kafka
        self.tracker = tracker
        self.queue = queue
        self.outbox = outbox
        self.metrics = metrics
        self.health = health
        self._revoking = revoking
        self._halted = halted  # their in-flight work never settles: a drain does not wait for it
        self._lock = asyncio.Lock()
        self._failing_since: float | None = None  # the first of the commits failing in a row

    async def run(self) -> None:
        interval = max(self.settings.commit_interval_ms / 1000, MIN_COMMIT_INTERVAL_S)
        while True:
            await asyncio.sleep(interval)
            await self.commit()

    async def commit(self, partitions: set[TopicPartition] | None = None) -> bool:
        """Commit the acknowledged prefix of owned partitions; False when the broker or group refused."""
        async with self._lock:
            if self.kafka.membership_lost():
                return False  # the partitions may be someone else's already
            if self.kafka.transactions is not None:
                return await self._commit_transactions(partitions)
            owned = self.kafka.assignment()
            due = [(tp, state, position) for tp, position in self.tracker.commits_due(partitions).items()
                   if tp in owned and (state := self.tracker.get(tp)) is not None]
            if not due:
                return True
            try:
                await self.kafka.commit({tp: position for tp, _, position in due},
                                        timeout_s=self.settings.commit_timeout_s)
            except (CommitRejected, BrokerUnavailable) as exc:
                self._failed(exc, len(due))
                return False
            self._recovered()
            for _, state, position in due:
                state.mark_committed(position)
            self.metrics.commits.inc()
            log.debug("committed", offsets={f"{tp.topic}:{tp.partition}": pos for tp, _, pos in due})
            return True

    async def _commit_transactions(self, partitions: set[TopicPartition] | None) -> bool:
        """Exactly-once: commit each owned partition's transaction with the input position it covers."""
        owned = self.kafka.assignment()
        states = {tp: state for tp in (partitions if partitions is not None else self.tracker.partitions())
                  if tp in owned and (state := self.tracker.get(tp)) is not None}
        if not states:
            return True
        done = await asyncio.gather(*(self._commit_transaction(tp, state) for tp, state in states.items()))
        if any(done):
            self.metrics.commits.inc()
        return all(done)

    async def _commit_transaction(self, tp: TopicPartition, state: PartitionOffsets) -> bool:
        """Close the transaction at the highest offset in it, wait until everything up to there is acknowledged,
        commit it with the position after that, and open the next (worker/stream/flow/transaction_gate.py).

        A transaction that fails to commit raises TransactionFailed: the worker stops, nothing of it is visible.
        """
        limit = self.outbox.close_transaction(state)
        committed = False
        try:
            if limit is None:
                return True  # nothing handed over since the last commit
            if not await self._acknowledged_through(state, limit, self.settings.commit_timeout_s):
                self._failed(TimeoutError(f"{tp.topic}:{tp.partition} not acknowledged through offset {limit}"), 1)
                return False
            position = limit + 1
            await self.kafka.commit_transaction(tp, position, timeout_s=self.settings.commit_timeout_s)
            state.mark_committed(position)
            committed = True
            self._recovered()
            log.debug("transaction_committed", partition=f"{tp.topic}:{tp.partition}", position=position)
            return True
        finally:
            self.outbox.reopen_transaction(state, committed=committed)

    async def _acknowledged_through(self, state: PartitionOffsets, offset: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while (state.position() or 0) <= offset:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or state.closed:
                return False
            self.outbox.acked.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self.outbox.acked.wait(), remaining)
        return True

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.info("commits_recovered", failing_for_s=round(time.monotonic() - self._failing_since, 1))
            self._failing_since = None
            self.health.clear_problem("commit")
            self.metrics.commit_failing.set(0)

    def _failed(self, error: BaseException, partitions: int) -> None:
        self.metrics.commit_failures.inc()
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        failing_for = now - self._failing_since
        log.warning("commit_failed", error=str(error), partitions=partitions, failing_for_s=round(failing_for, 1))
        if failing_for >= self.settings.commit_stall_s:
            self.health.set_problem("commit", f"offset commits have failed for {failing_for:.0f}s: {error}")
            self.metrics.commit_failing.set(1)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Inside the rebalance: finish, publish and commit the revoked partitions' work, within the bound."""
        owned = revoked & set(self.tracker.partitions())
        if not owned:
            return
        lost = self.kafka.membership_lost()
        log.info("partitions_revoking", partitions=names(owned), lost=lost)
        self._revoking |= owned
        drained = committed = False
        try:
            if not lost:
                drained = await self._drain(owned - self._halted, self.settings.shutdown_timeout_s)
                committed = await self.commit(owned)
        finally:
            self.tracker.close(owned)
            self._revoking -= owned
            self.queue.prune()
            for tp in owned:
                with suppress(KeyError):
                    self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))
        log.info("partitions_revoked", partitions=names(owned), lost=lost, drained=drained,
                 committed=committed)

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """After the rebalance: fresh bookkeeping (the consumer restarts from the committed offsets)."""
        for tp in assigned:
            self.tracker.open(tp)
        log.info("partitions_assigned", partitions=names(assigned))

    async def _drain(self, partitions: set[TopicPartition], timeout_s: float) -> bool:
        states = [state for tp in partitions if (state := self.tracker.get(tp)) is not None]
        deadline = time.monotonic() + timeout_s
        while any(state.in_flight for state in states):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.outbox.acked.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self.outbox.acked.wait(), remaining)
        return True


def names(partitions: set[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}:{tp.partition}" for tp in partitions)

"""Refusals for good, end to end through Apache Kafka's own limits, asserted from outside a real worker process.

Apache Kafka whatever NOTIF_TEST_BROKER says: Tansu ignores a topic's max.message.bytes (docs/RELIABILITY.md).

A topic's max.message.bytes set too low refuses what the worker publishes there, as a missing Write ACL
would: a result refused for good becomes its input's dead letter (`publish_rejected`); a dead letter refused
even without its value halts its partition (`/readyz` 503, `notif_halted_partitions`) and nothing past it is
committed; once the limit is raised, the next owner (a restarted worker) goes on from there and loses nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import ConsumerRecord

from tests.integration.kafka_helpers import (
    Sent,
    Topics,
    WorkerProcess,
    alter_topic,
    committed,
    eventually,
    notification_messages,
    produce,
    read_all,
)
from worker.dev.apache_kafka import ApacheKafka

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

TINY = {"max.message.bytes": "64"}  # smaller than any record batch the worker can write
ENV = {"NOTIF_COMMIT_INTERVAL_MS": "100", "NOTIF_RETRY_BACKOFF_MAX_S": "1"}


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_results_refused_for_good_become_publish_rejected_dead_letters(
        apache_kafka: ApacheKafka, make_kafka_topics: Callable[..., Awaitable[Topics]], tmp_path: Path) -> None:
    broker = apache_kafka.bootstrap
    topics = await make_kafka_topics(partitions=1)
    await alter_topic(broker, topics.output, TINY)
    inputs = notification_messages(5)
    await produce(broker, topics.input, inputs, partitions=1)
    worker = WorkerProcess({**topics.env(broker), **ENV}, tmp_path / "worker.log").start()
    try:
        dead = await read_all(broker, topics.dlq, at_least=len(inputs), timeout_s=60)

        async def all_committed() -> bool:
            return await committed(broker, topics.group, topics.input) == {0: len(inputs)}

        await eventually(all_committed, 30, "every input committed")
        assert await worker.status("/readyz") == 200
        _, text = worker.get("/metrics")
    finally:
        worker.stop()
    assert sorted(r.key or b"" for r in dead) == sorted(key or b"" for key, _ in inputs)
    assert {dict(r.headers)["notif.error.reason"] for r in dead} == {b"publish_rejected"}
    assert all(r.value == value for r, (_, value) in zip(sorted(dead, key=lambda r: r.key or b""),
                                                           sorted(inputs, key=lambda m: m[0] or b""), strict=True))
    assert metric(text, 'notif_dead_letters_total{reason="publish_rejected"}') == len(inputs)


@dataclass
class Halted:
    """A worker whose partition halted at a dead letter the broker refuses even without its value."""

    topics: Topics
    sent: list[Sent]
    poison: Sent
    worker: WorkerProcess

    def ends(self) -> dict[int, int]:
        """Each input partition's end offset (all committed: every input handled)."""
        ends = {s.partition: 0 for s in self.sent}
        for s in self.sent:
            ends[s.partition] = max(ends[s.partition], s.offset + 1)
        return ends


async def halt_a_partition(broker: str, make_kafka_topics: Callable[..., Awaitable[Topics]],
                           log: Path) -> Halted:
    """Inputs on two partitions, one of them poison, and a dead-letter topic that refuses every record; a worker
    on them, asserted halted from outside: /readyz 503 naming the partition and offset, notif_halted_partitions
    1, committed up to the poison record and never past it, the other partition going on."""
    topics = await make_kafka_topics(partitions=2)
    await alter_topic(broker, topics.dlq, TINY)
    good = notification_messages(6)
    # partition 0: n0, a poison record, n2, n4; partition 1: n1, n3, n5 (round-robin by index)
    messages = [good[0], good[1], (b"poison", b"[1, 2, 3]"), *good[2:]]
    sent = await produce(broker, topics.input, messages, partitions=2)
    poison = next(s for s in sent if s.key == b"poison")
    worker = WorkerProcess({**topics.env(broker), **ENV}, log).start()

    async def halted() -> bool:
        status, body = worker.get("/readyz")
        return status == 503 and "halted" in body

    await eventually(halted, 60, "/readyz 503 for the halted partition")
    _, reason = worker.get("/readyz")
    _, text = worker.get("/metrics")
    await eventually(lambda: partition_committed(broker, topics, 1 - poison.partition, 3), 30,
                     "the other partition goes on")
    done = await committed(broker, topics.group, topics.input)
    assert worker.alive, worker.log_tail()
    assert f"{topics.input}:{poison.partition}" in reason and f"offset {poison.offset}" in reason, reason
    assert metric(text, "notif_halted_partitions") == 1
    assert done[poison.partition] == poison.offset  # committed up to the poison record, never past it
    assert [e for e in worker.events() if e["event"] == "partition_halted"]
    return Halted(topics, sent, poison, worker)


async def every_input_handled(broker: str, halted: Halted) -> list[ConsumerRecord[bytes, bytes]]:
    """Once the refusal ended: every input committed, the poison record dead-lettered once, and every good
    input with its result (those published past the halt but not committed are published again by the next
    owner: at-least-once). The results."""
    topics = halted.topics

    async def all_committed() -> bool:
        return await committed(broker, topics.group, topics.input) == halted.ends()

    await eventually(all_committed, 60, "every input committed after the recovery")
    dead = await read_all(broker, topics.dlq, at_least=1, timeout_s=30)
    outputs = await read_all(broker, topics.output, at_least=6, timeout_s=30)
    assert [(r.key, dict(r.headers)["notif.error.reason"]) for r in dead] == [(b"poison", b"not_an_object")]
    assert {json.loads(r.value)["id"] for r in outputs} == {f"n{i}" for i in range(6)}
    return outputs


async def test_a_dead_letter_refused_even_without_its_value_halts_its_partition_until_the_limit_is_lifted(
        apache_kafka: ApacheKafka, make_kafka_topics: Callable[..., Awaitable[Topics]], tmp_path: Path) -> None:
    """The recovery by a restart: the refusal ends (the limit raised, the ACL granted), the pod restarts, and the
    next owner goes on from the halted offset."""
    broker = apache_kafka.bootstrap
    halted = await halt_a_partition(broker, make_kafka_topics, tmp_path / "first.log")
    halted.worker.stop()
    await alter_topic(broker, halted.topics.dlq, {"max.message.bytes": "1048588"})  # the refusal ends
    second = WorkerProcess({**halted.topics.env(broker), **ENV}, tmp_path / "second.log").start()
    try:
        await every_input_handled(broker, halted)
        assert await second.status("/readyz") == 200
    finally:
        second.stop()


async def test_a_halted_partition_is_handed_on_at_a_rebalance_once_the_refusal_ends(
        apache_kafka: ApacheKafka, make_kafka_topics: Callable[..., Awaitable[Topics]], tmp_path: Path) -> None:
    """The recovery by a rebalance, no restart: the refusal ends, a replica joins (a scale-up, a rollout), the
    halted partition is revoked (the halted worker forgets its halt: /readyz 200, notif_halted_partitions 0)
    and its new owner, whichever worker that is, goes on from the halted offset."""
    broker = apache_kafka.bootstrap
    halted = await halt_a_partition(broker, make_kafka_topics, tmp_path / "first.log")
    second: WorkerProcess | None = None
    try:
        await alter_topic(broker, halted.topics.dlq, {"max.message.bytes": "1048588"})  # the refusal ends
        second = WorkerProcess({**halted.topics.env(broker), **ENV}, tmp_path / "second.log").start()
        await every_input_handled(broker, halted)
        for worker in (halted.worker, second):
            await worker.wait_ready(30)
        _, text = halted.worker.get("/metrics")
        assert halted.worker.alive, halted.worker.log_tail()
    finally:
        halted.worker.stop()
        if second is not None:
            second.stop()
    assert metric(text, "notif_halted_partitions") == 0
    assert [e for e in halted.worker.events() if e["event"] == "partitions_revoked"]


async def partition_committed(broker: str, topics: Topics, partition: int, at_least: int) -> bool:
    return (await committed(broker, topics.group, topics.input)).get(partition, 0) >= at_least

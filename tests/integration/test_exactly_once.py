"""Exactly-once on Apache Kafka: workers killed with -9 mid-transaction, again and again, through rebalances.

A read_committed consumer of the output then sees every input exactly once: N in, N out, no duplicate, none
lost; dead letters too. Transactions need a broker that has them: the suite's Apache Kafka.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.integration.kafka_helpers import (
    TopicReader,
    Topics,
    WorkerProcess,
    committed,
    notification_messages,
    produce,
)
from worker.dev.apache_kafka import ApacheKafka

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

COUNT = 1500
POISON = 30  # every 50th input is not a notification: its dead letter is in the transaction too
KILLS = 4
# Slow enough that every kill lands mid-stream (about 100 messages/s per worker), commits every 200 ms.
WORKER_ENV = {"NOTIF_DELIVERY": "exactly_once", "NOTIF_PRODUCER_IDEMPOTENCE": "true", "NOTIF_MAX_BATCH_SIZE": "16",
              "NOTIF_COMMIT_INTERVAL_MS": "200", "NOTIF_MAX_IN_FLIGHT": "64", "NOTIF_SHUTDOWN_TIMEOUT_S": "10",
              "NOTIF_MAX_WAIT_MS": "5", "NOTIF_SESSION_TIMEOUT_MS": "6000", "NOTIF_HEARTBEAT_INTERVAL_MS": "1000"}
SLOW = ("--instant-classifier", "--instant-delay-ms", "150")


def inputs() -> list[tuple[bytes | None, bytes | None]]:
    messages = notification_messages(COUNT)
    for i in range(0, COUNT, COUNT // POISON):
        messages[i] = (messages[i][0], b"[not a notification " + str(i).encode() + b"]")
    return messages


async def test_kill_9_mid_transaction_through_rebalances_gives_every_input_exactly_once(
        apache_kafka: ApacheKafka, make_kafka_topics: Callable[..., Awaitable[Topics]], tmp_path: Path) -> None:
    bootstrap = apache_kafka.bootstrap
    topics = await make_kafka_topics(partitions=3)
    await produce(bootstrap, topics.input, inputs(), partitions=3)
    env = {**topics.env(bootstrap), **WORKER_ENV}
    workers = [WorkerProcess(env, tmp_path / f"w{i}-0.log", SLOW).start() for i in range(2)]
    kills = 0
    try:
        async with TopicReader(bootstrap, topics.output, isolation_level="read_committed") as outputs:
            for round_ in range(KILLS):
                victim = round_ % 2  # alternate: the survivor takes over the victim's partitions (a rebalance)
                await outputs.read_until((round_ + 1) * COUNT // (KILLS + 2), timeout_s=90)
                workers[victim].signal(signal.SIGKILL)
                assert await workers[victim].wait_exit(10) == -signal.SIGKILL
                kills += 1
                workers[victim] = WorkerProcess(env, tmp_path / f"w{victim}-{round_ + 1}.log", SLOW).start()
            results = COUNT - POISON
            await outputs.read_until(results, timeout_s=120)
            seen = Counter(json.loads(record.value)["id"] for record in await outputs.settle(2.0))
        async with TopicReader(bootstrap, topics.dlq, isolation_level="read_committed") as dead:
            await dead.read_until(POISON, timeout_s=30)
            dead_offsets = Counter((dict(record.headers)["notif.source.partition"],
                                    dict(record.headers)["notif.source.offset"]) for record in await dead.settle(1.0))
        done = await committed(bootstrap, topics.group, topics.input)
    finally:
        for process in workers:
            process.stop()
    assert kills == KILLS
    assert sum(done.values()) == COUNT, "every input's offset is committed in the end"
    duplicates = {key: n for key, n in seen.items() if n > 1}
    assert duplicates == {}, f"results published twice: {sorted(duplicates)[:10]}"
    expected = {f"n{i}" for i in range(COUNT) if i % (COUNT // POISON)}
    assert set(seen) == expected, f"missing: {sorted(expected - set(seen))[:10]}"
    assert len(dead_offsets) == POISON and max(dead_offsets.values()) == 1, "each dead letter exactly once"

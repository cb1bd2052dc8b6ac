"""Broker down at start, and stopped and restarted under a running worker: retry, not-ready, carry on."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest

from tests.integration.kafka_helpers import (
    EXTERNAL_BOOTSTRAP,
    Topics,
    WorkerProcess,
    eventually,
    notification_messages,
    produce,
    read_all,
)
from worker.dev.broker import EmbeddedBroker, create_topics_async, free_port

pytestmark = [
    pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120),
    pytest.mark.skipif(bool(EXTERNAL_BOOTSTRAP), reason="stops and restarts its own embedded broker"),
]


async def start_with_topics(broker: EmbeddedBroker, topics: Topics) -> None:
    broker.start()  # in memory: every restart begins empty
    await create_topics_async(broker.bootstrap, [topics.input, topics.output, topics.dlq], 2)


async def test_worker_rides_out_a_broker_outage(tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(f"raw-{suffix}", f"classified-{suffix}", f"dlq-{suffix}", f"group-{suffix}")
    broker = EmbeddedBroker(port=free_port())
    env = {**topics.env(broker.bootstrap), "NOTIF_RETRY_BACKOFF_MAX_S": "1", "NOTIF_COMMIT_INTERVAL_MS": "100"}
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        async def reported_unreachable() -> bool:
            events = [e["event"] for e in worker.events()]
            return "broker_unreachable" in events and "model_loaded" in events

        await eventually(reported_unreachable, 20, "the worker logs that the broker is unreachable")
        assert worker.alive
        assert await worker.status("/readyz") == 503
        assert await worker.status("/healthz") == 200

        await start_with_topics(broker, topics)
        await worker.wait_ready(30)
        await produce(broker.bootstrap, topics.input, notification_messages(20, "a"), partitions=2)
        assert len(await read_all(broker.bootstrap, topics.output, at_least=20, timeout_s=20)) == 20

        broker.stop()

        async def not_ready() -> bool:
            return await worker.status("/readyz") == 503

        await eventually(not_ready, 20, "/readyz reports the outage")
        assert worker.alive
        assert await worker.status("/healthz") == 200

        await start_with_topics(broker, topics)
        await worker.wait_ready(60)
        await produce(broker.bootstrap, topics.input, notification_messages(20, "b"), partitions=2)
        after = await read_all(broker.bootstrap, topics.output, at_least=20, timeout_s=30)
        assert sorted(r.key for r in after) == sorted(f"b{i}".encode() for i in range(20))

        metrics = worker.get("/metrics")[1]
        errors = next(line for line in metrics.splitlines() if line.startswith("notif_broker_errors_total"))
        assert float(errors.split()[1]) > 0
        worker.signal(signal.SIGTERM)
        assert await worker.wait_exit(20) == 0, worker.log_tail()
    finally:
        worker.stop()
        broker.stop()

"""Lag that means something: end offset minus committed offset, refreshed while paused, and the oldest record's age."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.kafka_helpers import Topics, WorkerProcess, eventually, notification_messages, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(150)]

MODEL_S = 6.0  # one model call: the window in which the records are consumed but not yet acknowledged


def samples(process: WorkerProcess) -> dict[tuple[str, str], float]:
    """(metric, partition label or '') -> value, from the worker's real /metrics text."""
    status, body = process.get("/metrics")
    assert status == 200, body
    return {(s.name, s.labels.get("partition", "")): s.value for family in text_string_to_metric_families(body)
            for s in family.samples}


async def test_lag_counts_consumed_but_uncommitted_and_grows_while_paused(
        broker: str, make_topics: Callable[..., Awaitable[Topics]], tmp_path: Path) -> None:
    topics = await make_topics(partitions=1)
    env = {**topics.env(broker), "NOTIF_MAX_BATCH_SIZE": "8", "NOTIF_MAX_IN_FLIGHT": "8", "NOTIF_MAX_WAIT_MS": "50",
           "NOTIF_COMMIT_INTERVAL_MS": "100"}
    process = WorkerProcess(env, tmp_path / "worker.log",
                            ("--instant-classifier", "--instant-delay-ms", str(MODEL_S * 1000)))
    process.start()
    try:
        await process.wait_ready()
        await produce(broker, topics.input, notification_messages(8))
        seen: dict[tuple[str, str], float] = {}

        async def metric_is(name: str, value: float, partition: str = "0") -> bool:
            seen.update(await asyncio.to_thread(samples, process))
            return seen.get((name, partition)) == value

        await eventually(lambda: metric_is("notif_messages_consumed_total", 8, ""), 30, "8 consumed")
        consumed_at = time.monotonic()
        # all 8 fetched, none acknowledged: a fetch-position lag would read 0 here
        await eventually(lambda: metric_is("notif_consumer_lag", 8), 3, f"lag 8 while in the model ({seen})")
        assert seen[("notif_paused_partitions", "")] == 1
        for index in range(5):  # one record batch each: exact end offsets even from Tansu's ListOffsets
            await produce(broker, topics.input, notification_messages(1, prefix=f"late{index}-"))
        await eventually(lambda: metric_is("notif_consumer_lag", 13), 3, f"lag 13 while paused ({seen})")
        assert seen[("notif_paused_partitions", "")] == 1, "the partition was not paused: the test proves nothing"
        age = seen[("notif_oldest_unacked_age_seconds", "0")]
        assert 0 < age <= time.monotonic() - consumed_at + 2.0
        await eventually(lambda: metric_is("notif_consumer_lag", 0), 4 * MODEL_S, f"lag back to 0 ({seen})")
        await eventually(lambda: metric_is("notif_oldest_unacked_age_seconds", 0), 3, "age 0 once all acknowledged")
    finally:
        process.stop()

"""Static membership (NOTIF_GROUP_INSTANCE_ID, KIP-345) on Apache Kafka: a replica restarted within the session
timeout comes back to its partitions without a rebalance of the other member; without it, the other member
rebalances twice (the leave and the join). The figures are in docs/RELIABILITY.md."""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.integration.kafka_helpers import Topics, WorkerProcess, eventually, notification_messages, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

SESSION_MS = 20_000  # the restart (a process start, no model) fits well inside it


def rebalances(process: WorkerProcess) -> int:
    return sum(1 for event in process.events() if event["event"] == "partitions_assigned")


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
async def test_a_restart_within_the_session_timeout_does_not_rebalance_the_other_member(
        static: bool, broker: str, make_topics: Callable[..., Awaitable[Topics]], tmp_path: Path) -> None:
    topics = await make_topics(partitions=4)
    await produce(broker, topics.input, notification_messages(40), partitions=4)

    def env(name: str) -> dict[str, str]:
        return {**topics.env(broker), "NOTIF_SESSION_TIMEOUT_MS": str(SESSION_MS),
                "NOTIF_HEARTBEAT_INTERVAL_MS": "1000", "NOTIF_SHUTDOWN_TIMEOUT_S": "5",
                **({"NOTIF_GROUP_INSTANCE_ID": name} if static else {})}

    a = WorkerProcess(env("worker-a"), tmp_path / "a0.log").start()
    b = WorkerProcess(env("worker-b"), tmp_path / "b.log").start()
    restarted = None
    try:
        await a.wait_ready(60)
        await b.wait_ready(60)

        async def settled() -> bool:  # both own partitions: the joins are over
            return a.alive and b.alive and await a.status("/readyz") == 200 and await b.status("/readyz") == 200

        await eventually(settled, 60, "both members own partitions")
        time.sleep(3)  # let any late rebalance of the joins finish
        before = rebalances(b)
        started = time.monotonic()
        a.signal(signal.SIGTERM)
        assert await a.wait_exit(20) == 0, a.log_tail()
        restarted = WorkerProcess(env("worker-a"), tmp_path / "a1.log").start()
        await restarted.wait_ready(60)
        back_s = time.monotonic() - started
        time.sleep(3)  # a rebalance, had there been one, has reached b by now
        after = rebalances(b)
    finally:
        for process in (a, b, restarted):
            if process is not None:
                process.stop()
    print(f"{'static' if static else 'dynamic'}: the other member rebalanced {after - before} times; "
          f"the restarted one served again after {back_s:.1f}s")
    if static:
        assert after == before, "a static member's restart rebalanced the other member"
    else:
        assert after > before, "without static membership the restart rebalances the group (the test's control)"

"""Liveness, readiness and the HTTP endpoints."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from worker.observe.health import HealthServer, HealthState
from worker.observe.metrics import Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_liveness_fails_when_the_loop_or_a_model_call_stalls() -> None:
    clock = Clock()
    state = HealthState(liveness_timeout_s=10, clock=clock)
    assert state.live()[0]
    clock.now += 11
    ok, reason = state.live()
    assert not ok and "no progress" in reason
    state.beat()
    call = state.inference_started()
    clock.now += 5
    state.beat()
    assert state.live()[0]
    clock.now += 6
    state.beat()
    ok, reason = state.live()
    assert not ok and "model call" in reason
    state.inference_finished(call)
    assert state.live()[0]


def test_with_two_model_calls_in_flight_the_oldest_running_one_counts() -> None:
    clock = Clock()
    state = HealthState(liveness_timeout_s=10, clock=clock)
    first = state.inference_started()
    clock.now += 6
    second = state.inference_started()  # launched behind the first
    clock.now += 5
    state.beat()
    ok, reason = state.live()
    assert not ok and "running for 11s" in reason
    state.inference_finished(first)  # the second has run for 5 s
    assert state.live()[0]
    retry = state.inference_started()  # a retry while the second is still out: finishing it ends only itself
    clock.now += 6
    state.inference_finished(retry)
    state.beat()
    ok, reason = state.live()
    assert not ok and "running for 11s" in reason
    state.inference_finished(second)
    assert state.live()[0]


def test_a_start_up_step_is_live_however_long_it_takes() -> None:
    clock = Clock()
    state = HealthState(liveness_timeout_s=10, clock=clock)
    state.starting("loading the model")
    clock.now += 600  # a first download of the model
    assert state.live() == (True, "starting: loading the model")
    state.started()
    assert state.live() == (True, "ok"), "liveness counts from the end of start-up"
    clock.now += 11
    assert not state.live()[0]


def test_readiness_needs_model_broker_and_partitions() -> None:
    state = HealthState(liveness_timeout_s=10)
    assert state.ready() == (False, "the model is not loaded")
    state.model_loaded = True
    assert not state.ready()[0]
    state.broker_reachable = True
    assert state.ready() == (False, "no input partitions are assigned")
    state.assigned_partitions = 2
    assert state.ready() == (True, "ok")


def test_a_problem_is_named_before_the_missing_assignment_it_may_cause() -> None:
    """A group whose Read ACL is denied is why no partition is assigned: /readyz names the denial."""
    state = HealthState(liveness_timeout_s=10)
    state.model_loaded = state.broker_reachable = True
    state.set_problem("denied:group:g", "not authorized: ... Read on group:g")
    assert state.ready() == (False, "not authorized: ... Read on group:g")
    state.clear_problem("denied:group:g")
    assert state.ready() == (False, "no input partitions are assigned")


async def http_get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = (await reader.read()).decode()
    writer.close()
    head, _, body = raw.partition("\r\n\r\n")
    return int(head.split()[1]), body


async def test_endpoints() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.messages_consumed.inc(3)
    state = HealthState(liveness_timeout_s=10)
    server = await HealthServer(state, registry, host="127.0.0.1", port=0).start()
    try:
        assert server.port > 0
        status, body = await http_get(server.port, "/metrics")
        assert status == 200 and "notif_messages_consumed_total 3.0" in body
        assert await http_get(server.port, "/healthz") == (200, "ok\n")
        assert await http_get(server.port, "/readyz") == (503, "the model is not loaded\n")
        state.model_loaded, state.broker_reachable, state.assigned_partitions = True, True, 1
        assert await http_get(server.port, "/readyz?verbose=1") == (200, "ok\n")
        assert (await http_get(server.port, "/nope"))[0] == 404
        assert (await http_get(server.port, "/healthz", method="POST"))[0] == 400
        assert await http_get(server.port, "/healthz", method="HEAD") == (200, "")
    finally:
        await server.stop()


def test_a_problem_makes_it_not_ready_and_a_lasting_one_not_alive() -> None:
    clock = Clock()
    state = HealthState(liveness_timeout_s=1000, clock=clock)
    state.model_loaded, state.broker_reachable, state.assigned_partitions = True, True, 1
    state.set_problem("commit", "offset commits have failed for 60s")
    state.set_problem("breaker", "the breaker is open", fatal_after_s=30)
    assert state.ready() == (False, "the breaker is open")  # the first by key, so the answer is stable
    clock.now += 20
    state.beat()
    state.set_problem("breaker", "the breaker is open, still", fatal_after_s=30)  # keeps the time it began
    assert state.live() == (True, "ok")
    clock.now += 11
    state.beat()
    ok, reason = state.live()
    assert not ok and reason.startswith("the breaker is open, still")
    state.clear_problem("breaker")
    assert state.live() == (True, "ok")
    assert state.ready() == (False, "offset commits have failed for 60s")
    state.clear_problem("commit")
    assert state.ready() == (True, "ok")

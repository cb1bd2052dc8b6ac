"""The circuit breaker: opens after N wholly failed batches in a row, closes at the first success."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from worker.observe.health import HealthState
from worker.observe.metrics import Metrics
from worker.stream.flow.breaker import CircuitBreaker


def breaker() -> tuple[CircuitBreaker, HealthState, CollectorRegistry]:
    registry = CollectorRegistry()
    health = HealthState(liveness_timeout_s=60)
    health.model_loaded, health.broker_reachable, health.assigned_partitions = True, True, 1
    return CircuitBreaker(failures=3, retry_s=5, unhealthy_s=100, metrics=Metrics(registry), health=health), \
        health, registry


def test_opens_at_the_threshold_and_closes_at_a_success() -> None:
    circuit, health, registry = breaker()
    circuit.failed("CUDA error")
    circuit.failed("CUDA error")
    assert not circuit.open and health.ready()[0]
    circuit.failed("CUDA error")
    assert circuit.open
    ok, reason = health.ready()
    assert not ok and "circuit breaker is open: 3 batches" in reason and "CUDA error" in reason
    assert registry.get_sample_value("notif_breaker_open") == 1
    circuit.succeeded()
    assert not circuit.open and health.ready() == (True, "ok") and circuit.consecutive == 0
    assert registry.get_sample_value("notif_breaker_open") == 0


def test_a_success_between_failures_starts_the_count_again() -> None:
    circuit, _, _ = breaker()
    for _ in range(2):
        circuit.failed("x")
    circuit.succeeded()
    for _ in range(2):
        circuit.failed("x")
    assert not circuit.open


async def test_the_wait_ends_early_when_stopping() -> None:
    circuit, _, _ = breaker()
    for _ in range(3):
        circuit.failed("x")
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(circuit.wait_before_retry(stop), 1)  # retry_s is 5: the stop ended it

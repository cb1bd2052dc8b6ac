"""The latency benchmark's pure parts: histogram quantiles, bucket differences, lag growth, /metrics parsing."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from worker.bench.latency import lag_slope, parse_metrics, quantile, subtract
from worker.observe.metrics import Metrics

INF = float("inf")


def test_quantile_interpolates_inside_the_bucket() -> None:
    buckets = [(0.01, 0.0), (0.02, 10.0), (0.05, 10.0), (INF, 10.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.015)
    assert quantile(1.0, buckets) == pytest.approx(0.02)


def test_quantile_in_the_first_bucket_starts_at_zero() -> None:
    assert quantile(0.5, [(0.01, 4.0), (INF, 4.0)]) == pytest.approx(0.005)


def test_quantile_past_the_last_bound_is_that_bound() -> None:
    assert quantile(0.99, [(0.01, 1.0), (30.0, 1.0), (INF, 100.0)]) == 30.0


def test_quantile_without_observations_is_none() -> None:
    assert quantile(0.5, []) is None
    assert quantile(0.5, [(0.01, 0.0), (INF, 0.0)]) is None


def test_subtract_keeps_only_what_happened_between_scrapes() -> None:
    before = [(0.01, 5.0), (INF, 7.0)]
    after = [(0.01, 6.0), (INF, 10.0)]
    assert subtract(after, before) == [(0.01, 1.0), (INF, 3.0)]


def test_lag_slope_ignores_the_first_quarter() -> None:
    steady = [(t / 4, 50.0) for t in range(20)]
    assert lag_slope(steady) == pytest.approx(0.0)
    growing = [(t / 4, 100.0 * t / 4) for t in range(20)]
    assert lag_slope(growing) == pytest.approx(100.0)
    ramp_then_flat = [(0.0, 0.0), (0.25, 40.0)] + [(t / 4, 40.0) for t in range(2, 20)]
    assert lag_slope(ramp_then_flat) == pytest.approx(0.0)
    assert lag_slope([(0.0, 5.0)]) == 0.0


def test_parse_metrics_reads_the_workers_registry() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.classifications.labels(folder="Work", priority="3").inc(4)
    metrics.dead_letters.labels(reason="empty").inc()
    for seconds in (0.002, 0.002, 0.2):
        metrics.end_to_end_latency.observe(seconds)
    scrape = parse_metrics(generate_latest(metrics.registry).decode())
    assert scrape.done == 5
    assert scrape.buckets[-1] == (INF, 3.0)
    assert dict(scrape.buckets)[0.0025] == 2.0

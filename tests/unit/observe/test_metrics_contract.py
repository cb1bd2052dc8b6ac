"""The README's metric names and label sets, pinned against a real scrape of the worker's /metrics."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.readme import readme_metrics
from worker.observe.health import HealthServer, HealthState
from worker.observe.metrics import Metrics

# The text format names a counter X by its sample X_total, an info X by X_info, a histogram by its family.
SUFFIXES = {"counter": "_total", "info": "_info"}  # README names: counters and infos by sample name


async def _scrape(registry: CollectorRegistry) -> str:
    server = await HealthServer(HealthState(liveness_timeout_s=30), registry, host="127.0.0.1", port=0).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
        await writer.drain()
        response = await reader.read()
        writer.close()
    finally:
        await server.stop()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head
    return body.decode("utf-8")


def _touched() -> CollectorRegistry:
    """A fresh registry with every labelled metric given one child, so its labels show in the scrape."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.classifications.labels("Work", "3").inc()
    metrics.dead_letters.labels("too_large").inc()
    metrics.consumer_lag.labels("notifications.raw", "0").set(5)
    metrics.model_info.info({"model": "m", "contract_version": "1.0"})
    for name in dir(metrics):  # any labelled metric another part added: give it a child too
        metric = getattr(metrics, name)
        names = getattr(metric, "_labelnames", ())
        if names and not metric._metrics:
            metric.labels(*(f"x{i}" for i in range(len(names))))
    return registry


async def test_the_scrape_exposes_exactly_the_readme_metrics_with_their_labels() -> None:
    promised = readme_metrics()
    assert len(promised) >= 19, "the README's metric list could not be read"
    exposed: dict[str, frozenset[str]] = {}
    families = list(text_string_to_metric_families(await _scrape(_touched())))
    names = {family.name for family in families}
    for family in families:
        if family.name.endswith("_created") and family.name.removesuffix("_created") in names:
            continue  # prometheus_client's creation timestamps of counters and histograms, not metrics
        suffix = SUFFIXES.get(family.type, "")
        name = family.name + suffix
        labels = {label for sample in family.samples for label in sample.labels if label != "le"}
        exposed[name] = frozenset() if name.endswith("_info") else frozenset(labels)  # README: no info labels
    promised = {name: frozenset() if name.endswith("_info") else labels for name, labels in promised.items()}
    assert sorted(set(promised) - set(exposed)) == [], "promised by the README, not exposed"
    assert sorted(set(exposed) - set(promised)) == [], "exposed, but not in the README's list"
    assert {n: exposed[n] for n in promised} == promised

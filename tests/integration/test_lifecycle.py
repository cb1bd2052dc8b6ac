"""The model lifecycle through a real broker with the tiny Qwen3 and two real LoRA adapters.

Review routing, a hot adapter swap by moving a symlink mid-stream, a bad adapter that keeps the old one
serving, and a shadow adapter whose answers go to their own topic and are compared with the serving ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.integration.adapters import make_adapter
from tests.integration.fault_proxy import FaultProxy
from tests.integration.kafka_helpers import (
    TopicReader,
    Topics,
    WorkerProcess,
    committed,
    eventually,
    notification_messages,
    produce,
    read_all,
)
from worker.contract import ClassificationResult, Notification, contract_fingerprint
from worker.dev.broker import create_topics_async
from worker.dev.instant import InstantClassifier
from worker.model.adapters import adapter_id
from worker.observe.health import HealthState
from worker.observe.metrics import Metrics
from worker.protocol import NotificationClassifier
from worker.settings import Settings
from worker.stream.flow.model_calls import InferenceThread
from worker.stream.kafka.clients import KafkaClients
from worker.stream.pipeline import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    fingerprint = contract_fingerprint()
    return {name: make_adapter(str(tiny_model_dir), root / name, contract=fingerprint, seed=seed)
            for name, seed in (("a", 1), ("b", 2))}


def settings_for(topics: Topics, broker: str, tiny_model_dir: Path, **extra: Any) -> Settings:
    return Settings.model_validate({
        **{key.removeprefix("NOTIF_").lower(): value for key, value in topics.env(broker).items()},
        "model": str(tiny_model_dir), "quantization": "none", "device": "cpu", "commit_interval_ms": 50,
        "max_wait_ms": 5, "max_batch_size": 8, **extra,
    })


def load(settings: Settings) -> NotificationClassifier:
    from worker.model.classifier import Classifier

    return Classifier.from_settings(settings)


@asynccontextmanager
async def running(settings: Settings, classifier: NotificationClassifier, registry: CollectorRegistry
                  ) -> AsyncIterator[Pipeline]:
    health = HealthState(liveness_timeout_s=60)
    health.model_loaded = True
    thread = InferenceThread()
    pipeline = Pipeline(settings, classifier, KafkaClients(settings), thread, Metrics(registry), health)
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    try:
        yield pipeline
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        thread.stop()


async def all_committed(broker: str, topics: Topics, count: int) -> None:
    async def done() -> bool:
        return sum((await committed(broker, topics.group, topics.input)).values()) == count

    await eventually(done, 30, f"{count} input offsets committed")


def value(registry: CollectorRegistry, sample: str, **labels: str) -> float:
    return registry.get_sample_value(sample, labels) or 0.0


def low(result: dict[str, Any], below: float) -> bool:
    return min(result["confidence"]["folder"], result["confidence"]["priority"]) < below


async def test_review_records_appear_for_low_confidence_results_only(
        broker: str, make_topics: Callable[..., Awaitable[Topics]], tiny_model_dir: Path,
        adapters: dict[str, Path]) -> None:
    topics = await make_topics(partitions=2)
    review_topic = f"review-{topics.group}"
    await create_topics_async(broker, [review_topic], 2)
    messages = notification_messages(40)
    settings = settings_for(topics, broker, tiny_model_dir, adapter=str(adapters["a"]), review_topic=review_topic)
    classifier = load(settings)
    # The threshold: the median of the results' lower confidence, so both kinds are plentiful.
    offline = classifier.classify([Notification.model_validate_json(raw) for _, raw in messages if raw])
    lows = sorted(min(r.confidence.folder or 0, r.confidence.priority or 0) for r in offline)
    below = lows[len(lows) // 2]
    settings = settings.with_overrides(review_below=below)
    registry = CollectorRegistry()
    await produce(broker, topics.input, messages, partitions=2)
    async with running(settings, classifier, registry):
        outputs = await read_all(broker, topics.output, at_least=len(messages), timeout_s=90)
        flagged = {r.key for r in outputs if json.loads(r.value)["review"]}
        reviews = await read_all(broker, review_topic, at_least=len(flagged), timeout_s=30)
        await all_committed(broker, topics, len(messages))
    results = {r.key: json.loads(r.value) for r in outputs}
    assert len(outputs) == len(results) == len(messages)
    assert 0 < len(flagged) < len(messages)
    for result in results.values():
        assert result["review"] == low(result, below), result
        assert result["adapter_id"] == adapter_id(str(adapters["a"]))
    assert sorted(r.key for r in reviews) == sorted(flagged)
    inputs = {key: json.loads(raw) for key, raw in messages if raw}
    for record in reviews:
        review = json.loads(record.value)
        assert review.pop("input") == inputs[record.key]
        assert review == results[record.key]
    counted = sum(value(registry, "notif_review_total", reason=reason)
                  for reason in ("folder", "priority", "both", "unscored"))
    assert counted == len(flagged)


def point(link: Path, target: Path) -> None:
    """Move a symlink atomically, as a deployment promoting an adapter would."""
    fresh = link.with_name(link.name + ".new")
    fresh.unlink(missing_ok=True)
    fresh.symlink_to(target)
    os.replace(fresh, link)


def by_key(records: Sequence[Any]) -> dict[bytes, dict[str, Any]]:
    return {r.key: json.loads(r.value) for r in records}


def keys_of(messages: Sequence[tuple[bytes | None, bytes | None]]) -> list[bytes]:
    return [key for key, _ in messages if key is not None]  # notification_messages keys every message


async def test_moving_the_symlink_swaps_the_adapter_mid_stream(
        broker: str, make_topics: Callable[..., Awaitable[Topics]], tiny_model_dir: Path,
        adapters: dict[str, Path], tmp_path: Path) -> None:
    topics = await make_topics(partitions=2)
    current = tmp_path / "current"
    current.symlink_to(adapters["a"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text("{}")  # no weights, no contract: must not replace b
    settings = settings_for(topics, broker, tiny_model_dir, adapter=str(current), adapter_poll_s=0.1)
    id_a, id_b = adapter_id(str(adapters["a"])), adapter_id(str(adapters["b"]))
    registry = CollectorRegistry()
    first, second, third = (notification_messages(30, prefix) for prefix in ("a", "b", "c"))
    await produce(broker, topics.input, first, partitions=2)
    async with running(settings, load(settings), registry) as pipeline, \
            TopicReader(broker, topics.output) as reader:
        await reader.read_until(10, timeout_s=90)
        point(current, adapters["b"])  # mid-stream: most of the first messages are still to come

        async def swapped() -> bool:
            return value(registry, "notif_adapter_reloads_total", outcome="swapped") == 1

        await eventually(swapped, 60, "the adapter swapped")
        assert pipeline.adapter_watch is not None and pipeline.adapter_watch.serving == str(adapters["b"])
        await produce(broker, topics.input, second, partitions=2)
        await reader.read_until(len(first) + len(second), timeout_s=90)
        point(current, bad)

        async def refused() -> bool:
            return value(registry, "notif_adapter_reloads_total", outcome="failed") == 1

        await eventually(refused, 60, "the bad adapter refused")
        await produce(broker, topics.input, third, partitions=2)
        records = await reader.read_until(len(first) + len(second) + len(third), timeout_s=90)
        await all_committed(broker, topics, len(first) + len(second) + len(third))
    results = by_key(records)
    assert len(records) == len(results) == 90  # every message once: none lost, none redone
    ids = {prefix: [results[key]["adapter_id"] for key in keys_of(batch)]
           for prefix, batch in (("a", first), ("b", second), ("c", third))}
    assert ids["a"][:10].count(id_a) >= 1 and set(ids["a"]) <= {id_a, id_b}
    assert set(ids["b"]) == {id_b} and set(ids["c"]) == {id_b}  # the bad adapter never served
    for partition in (0, 1):  # within a partition, a then b: one switch, between two batches
        order = [json.loads(r.value)["adapter_id"] for r in sorted(records, key=lambda r: r.offset)
                 if r.partition == partition]
        assert order == sorted(order, key=lambda i: i == id_b)
    assert value(registry, "notif_model_info", adapter=str(adapters["b"]), adapter_id=id_b, name=(
        f"{tiny_model_dir}+{adapters['b']}")) == 1.0


async def test_the_shadow_topic_has_a_result_for_every_input(
        broker: str, make_topics: Callable[..., Awaitable[Topics]], tiny_model_dir: Path,
        adapters: dict[str, Path]) -> None:
    topics = await make_topics(partitions=2)
    shadow_topic = f"shadow-{topics.group}"
    await create_topics_async(broker, [shadow_topic], 2)
    settings = settings_for(topics, broker, tiny_model_dir, adapter=str(adapters["a"]),
                            shadow_adapter=str(adapters["b"]), shadow_topic=shadow_topic)
    messages = notification_messages(40)
    registry = CollectorRegistry()
    await produce(broker, topics.input, messages, partitions=2)
    async with running(settings, load(settings), registry):
        outputs = by_key(await read_all(broker, topics.output, at_least=len(messages), timeout_s=90))
        shadows = by_key(await read_all(broker, shadow_topic, at_least=len(messages), timeout_s=60))
        await all_committed(broker, topics, len(messages))
    assert sorted(outputs) == sorted(shadows) == sorted(keys_of(messages))
    assert {r["adapter_id"] for r in outputs.values()} == {adapter_id(str(adapters["a"]))}
    assert {r["adapter_id"] for r in shadows.values()} == {adapter_id(str(adapters["b"]))}
    assert any(outputs[k]["confidence"] != shadows[k]["confidence"] for k in outputs)  # really another adapter
    for decision in ("folder", "priority"):
        agree = sum(outputs[k][decision] == shadows[k][decision] for k in outputs)
        assert value(registry, "notif_shadow_agreement_total", decision=decision, agree="true") == agree
        assert value(registry, "notif_shadow_agreement_total", decision=decision, agree="false") == 40 - agree
    assert value(registry, "notif_shadow_failures_total", stage="score") == 0


class FailingShadow(InstantClassifier):
    """Serves instantly; its shadow raises on every batch."""

    def classify_shadow(self, notifications: Sequence[Notification]) -> list[ClassificationResult]:
        raise RuntimeError("shadow adapter out of memory")


async def test_a_failing_shadow_leaves_serving_and_commits_alone(
        broker: str, make_topics: Callable[..., Awaitable[Topics]]) -> None:
    topics = await make_topics(partitions=2)
    settings = Settings.model_validate({
        **{key.removeprefix("NOTIF_").lower(): value for key, value in topics.env(broker).items()},
        "commit_interval_ms": 50, "max_batch_size": 8, "adapter": "serving", "shadow_adapter": "candidate",
        "shadow_topic": f"shadow-{topics.group}",
    })
    messages = notification_messages(40)
    registry = CollectorRegistry()
    await produce(broker, topics.input, messages, partitions=2)
    async with running(settings, FailingShadow(), registry):
        outputs = await read_all(broker, topics.output, at_least=len(messages), timeout_s=60)
        await all_committed(broker, topics, len(messages))
    assert sorted(r.key for r in outputs) == sorted(keys_of(messages))
    assert value(registry, "notif_shadow_failures_total", stage="score") >= 1


class SlowShadow(InstantClassifier):
    """Serves instantly; its shadow takes far longer than the shutdown leaves it."""

    def classify_shadow(self, notifications: Sequence[Notification]) -> list[ClassificationResult]:
        time.sleep(SLOW_SHADOW_S)
        return self.classify(notifications)


SLOW_SHADOW_S = 8.0


async def test_the_shadows_last_batch_is_counted_when_the_shutdown_cuts_it(
        broker: str, make_topics: Callable[..., Awaitable[Topics]]) -> None:
    """Finished or counted as dropped (notif_shadow_failures_total{stage="shutdown"}), never dropped silently."""
    topics = await make_topics(partitions=1)
    settings = Settings.model_validate({
        **{key.removeprefix("NOTIF_").lower(): value for key, value in topics.env(broker).items()},
        "commit_interval_ms": 50, "max_batch_size": 8, "adapter": "serving", "shadow_adapter": "candidate",
        "shadow_topic": f"shadow-{topics.group}", "shutdown_timeout_s": 4,
    })
    messages = notification_messages(8)
    registry = CollectorRegistry()
    await produce(broker, topics.input, messages, partitions=1)
    started = time.monotonic()
    async with running(settings, SlowShadow(), registry):
        outputs = await read_all(broker, topics.output, at_least=len(messages), timeout_s=60)
        await all_committed(broker, topics, len(messages))
    assert time.monotonic() - started < SLOW_SHADOW_S + 30
    assert sorted(r.key for r in outputs) == sorted(keys_of(messages))
    assert value(registry, "notif_shadow_failures_total", stage="shutdown") == 1
    assert value(registry, "notif_shadow_agreement_total", decision="folder", agree="true") + value(
        registry, "notif_shadow_agreement_total", decision="folder", agree="false") == 0


class HeldShadow(InstantClassifier):
    """Serves instantly; its shadow answers once the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def classify_shadow(self, notifications: Sequence[Notification]) -> list[ClassificationResult]:
        self.release.wait(60)
        return self.classify(notifications)


async def test_the_shadows_last_records_unacknowledged_at_the_shutdown_are_counted(
        fault_proxy: FaultProxy, make_proxied_topics: Callable[..., Awaitable[Topics]]) -> None:
    """Scored and handed over, but not acknowledged when the stop ends (the network to the broker went silent
    just before): counted as notif_shadow_failures_total{stage="shutdown"}, never dropped silently (was:
    nothing counted; the producer's close, cut short by the stop, took them away without a word)."""
    topics = await make_proxied_topics(partitions=1)
    broker = fault_proxy.address
    shadow_topic = f"shadow-{topics.group}"
    await create_topics_async(broker, [shadow_topic], 1)
    settings = Settings.model_validate({
        **{key.removeprefix("NOTIF_").lower(): value for key, value in topics.env(broker).items()},
        "commit_interval_ms": 50, "max_batch_size": 8, "max_wait_ms": 2000, "adapter": "serving",
        "shadow_adapter": "candidate", "shadow_topic": shadow_topic, "shutdown_timeout_s": 4,
    })
    messages = notification_messages(8)  # one batch: its shadow holds the inference thread until released
    registry = CollectorRegistry()
    await produce(broker, topics.input, messages, partitions=1)
    classifier = HeldShadow()
    try:
        async with running(settings, classifier, registry):
            await read_all(broker, topics.output, at_least=len(messages), timeout_s=60)
            await all_committed(broker, topics, len(messages))
            fault_proxy.blackhole()  # from now on the broker acknowledges nothing
            classifier.release.set()

            async def handed_over() -> bool:  # scored: the agreement is counted just before the hand-over
                return value(registry, "notif_shadow_agreement_total", decision="folder", agree="true") + value(
                    registry, "notif_shadow_agreement_total", decision="folder", agree="false") == len(messages)

            await eventually(handed_over, 30, "the shadow's batch scored and handed to the producer")
    finally:
        classifier.release.set()
    assert value(registry, "notif_shadow_failures_total", stage="shutdown") == 1
    assert value(registry, "notif_shadow_failures_total", stage="publish") == 0


async def test_sighup_swaps_the_adapter_of_a_running_worker(
        broker: str, make_topics: Callable[..., Awaitable[Topics]], tiny_model_dir: Path,
        adapters: dict[str, Path], tmp_path: Path) -> None:
    topics = await make_topics(partitions=2)
    current = tmp_path / "current"
    current.symlink_to(adapters["a"])
    env = {**topics.env(broker), "NOTIF_MODEL": str(tiny_model_dir), "NOTIF_QUANTIZATION": "none",
           "NOTIF_DEVICE": "cpu", "NOTIF_ADAPTER": str(current), "NOTIF_ADAPTER_POLL_S": "0",
           "NOTIF_COMMIT_INTERVAL_MS": "100"}
    id_a, id_b = adapter_id(str(adapters["a"])), adapter_id(str(adapters["b"]))
    worker = WorkerProcess(env, tmp_path / "worker.log", args=()).start()
    try:
        await produce(broker, topics.input, notification_messages(10, "a"), partitions=2)
        await worker.wait_ready(120)
        async with TopicReader(broker, topics.output) as reader:
            await reader.read_until(10, timeout_s=60)
            assert f'adapter_id="{id_a}"' in worker.get("/metrics")[1]
            point(current, adapters["b"])
            worker.signal(signal.SIGHUP)  # polling is off: only the signal makes it look

            async def swapped() -> bool:
                return f'adapter_id="{id_b}"' in (await asyncio.to_thread(worker.get, "/metrics"))[1]

            await eventually(swapped, 60, "notif_model_info names the new adapter")
            await produce(broker, topics.input, notification_messages(10, "b"), partitions=2)
            records = await reader.read_until(20, timeout_s=60)
        metrics_text = worker.get("/metrics")[1]
        assert worker.alive
        worker.signal(signal.SIGTERM)
        assert await worker.wait_exit(30) == 0, worker.log_tail()
    finally:
        worker.stop()
    results = by_key(records)
    assert len(records) == len(results) == 20
    assert {r["adapter_id"] for k, r in results.items() if k.startswith(b"a")} == {id_a}
    assert {r["adapter_id"] for k, r in results.items() if k.startswith(b"b")} == {id_b}
    assert 'notif_adapter_reloads_total{outcome="swapped"} 1.0' in metrics_text
    events = [e["event"] for e in worker.events()]
    assert events.count("model_loaded") == 1 and "adapter_swapped" in events


def test_the_fast_engine_follows_the_active_adapter(tiny_model_dir: Path, adapters: dict[str, Path]) -> None:
    # The fast engine merges the active adapter into dense weights: the shadow and a swapped-in adapter need
    # their own, or they would score with the serving adapter's weights.
    notes = [Notification(title=f"message {i}", body="see you " * i) for i in range(12)]
    seen: dict[str, list[list[tuple[str, int, float | None, str | None]]]] = {}
    for engine in ("reference", "fast"):
        settings = Settings.model_validate({
            "model": str(tiny_model_dir), "quantization": "none", "device": "cpu", "engine": engine,
            "adapter": str(adapters["a"]), "shadow_adapter": str(adapters["b"]), "shadow_topic": "shadow"})
        classifier = load(settings)
        assert (classifier.engine is not None) == (engine == "fast")  # type: ignore[attr-defined]
        runs = [classifier.classify(notes), classifier.classify_shadow(notes)]  # type: ignore[attr-defined]
        classifier.swap_adapter(str(adapters["b"]))  # type: ignore[attr-defined]
        runs.append(classifier.classify(notes))
        seen[engine] = [[(r.folder, r.priority, r.confidence.folder, r.adapter_id) for r in run] for run in runs]
    assert seen["fast"][0] != seen["fast"][1]  # the shadow really scored with its own weights
    assert seen["fast"][2] == seen["fast"][1]  # swapped to b: b's answers
    for fast, reference in zip(seen["fast"], seen["reference"], strict=True):
        for a, b in zip(fast, reference, strict=True):
            assert a[:2] == b[:2] and a[3] == b[3] and a[2] == pytest.approx(b[2], abs=1e-4)


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_a_batch_launched_before_a_swap_is_read_back_as_the_adapter_that_launched_it(
        tiny_model_dir: Path, adapters: dict[str, Path], engine: str) -> None:
    # With batches in flight the inference thread may run a shadow pass or a swap between a batch's launch and
    # the read-back of its results: they are still the launching adapter's, labelled with its id.
    notes = [Notification(title=f"message {i}", body="see you " * i) for i in range(12)]
    settings = Settings.model_validate({
        "model": str(tiny_model_dir), "quantization": "none", "device": "cpu", "engine": engine, "max_batch_size": 5,
        "adapter": str(adapters["a"]), "shadow_adapter": str(adapters["b"]), "shadow_topic": "shadow"})
    classifier: Any = load(settings)

    def seen(results: list[ClassificationResult]) -> list[tuple[str, int, float | None, str | None]]:
        return [(r.folder, r.priority, r.confidence.folder, r.adapter_id) for r in results]

    with_a, with_b = seen(classifier.classify(notes)), seen(classifier.classify_shadow(notes))
    assert with_a != with_b
    launched = classifier.launch(notes)  # three passes of up to 5
    assert seen(classifier.classify_shadow(notes)) == with_b
    classifier.swap_adapter(str(adapters["b"]))
    assert seen(launched()) == with_a
    assert seen(classifier.launch(notes)()) == with_b

"""`notif-worker serve` on the tiny random-weight Qwen3: the real classifier behind the real Kafka loop."""

from __future__ import annotations

import json
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.integration.kafka_helpers import Topics, WorkerProcess, notification_messages, produce, read_all
from worker.contract import FOLDERS, PRIORITIES, ClassificationResult
from worker.observe.metrics import Metrics

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]


def metric_names() -> set[str]:
    registry = CollectorRegistry()
    Metrics(registry)
    return {metric.name for metric in registry.collect()}


async def test_serve_classifies_with_the_tiny_model(
        broker: str, make_topics: Callable[..., Awaitable[Topics]], tiny_model_dir: Path, tmp_path: Path) -> None:
    topics = await make_topics(partitions=2)
    env = {**topics.env(broker), "NOTIF_MODEL": str(tiny_model_dir), "NOTIF_QUANTIZATION": "none",
           "NOTIF_DEVICE": "cpu", "NOTIF_MAX_BATCH_SIZE": "4", "NOTIF_COMMIT_INTERVAL_MS": "100"}
    worker = WorkerProcess(env, tmp_path / "worker.log", args=()).start()
    try:
        await produce(broker, topics.input, [*notification_messages(6), (b"bad", b"[]")], partitions=2)
        await worker.wait_ready(120)
        outputs = await read_all(broker, topics.output, at_least=6, timeout_s=60)
        dead = await read_all(broker, topics.dlq, at_least=1, timeout_s=10)
        status, metrics_text = worker.get("/metrics")
        worker.signal(signal.SIGTERM)
        assert await worker.wait_exit(30) == 0, worker.log_tail()
    finally:
        worker.stop()
    results = {r.key: ClassificationResult.model_validate(json.loads(r.value)) for r in outputs}
    assert sorted(results) == sorted(f"n{i}".encode() for i in range(6))
    for key, result in results.items():
        assert result.id == key.decode()
        assert result.folder in FOLDERS and result.priority in PRIORITIES
        assert result.decoding == "constrained" and result.model != "instant"
        assert result.confidence.folder is not None and 0.0 <= result.confidence.folder <= 1.0
    reasons = [(r.key, r.value, dict(r.headers)["notif.error.reason"]) for r in dead]
    assert reasons == [(b"bad", b"[]", b"not_an_object")]
    assert status == 200
    exposed = {line.split("{")[0].split(" ")[0] for line in metrics_text.splitlines() if line.startswith("notif_")}
    missing = {name for name in metric_names() if not any(e.startswith(name) for e in exposed)}
    assert not missing
    assert 'notif_model_info{' in metrics_text and 'quantization="none"' in metrics_text
    info = next(line for line in metrics_text.splitlines() if line.startswith("notif_model_info{"))
    assert 'device="cpu"' in info and 'torch="' in info and 'cuda="' in info and 'dtype="float32"' in info
    events = [e["event"] for e in worker.events()]
    assert "model_loaded" in events and "worker_failed" not in events
    loaded = next(e for e in worker.events() if e["event"] == "model_loaded")
    assert loaded["device"] == "cpu" and loaded["torch"] and loaded["cuda"]

"""`notif-worker serve` on the tiny random-weight Qwen3: the real classifier behind the real Kafka loop."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.kafka_helpers import (
    Topics,
    WorkerProcess,
    eventually,
    notification_messages,
    produce,
    read_all,
)
from worker.contract import (
    FOLDERS,
    PRIORITIES,
    ClassificationResult,
    PromptTokens,
    decode_notification,
    render_user_message,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) -> value of a /metrics scrape, parsed by prometheus_client's own parser."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return scrape.get((name, frozenset(labels.items())))


async def test_serve_classifies_with_the_tiny_model(
        broker: str, make_topics: Callable[..., Awaitable[Topics]], tiny_model_dir: Path, tmp_path: Path) -> None:
    topics = await make_topics(partitions=2)
    # Batches of one: each call's padded tokens are that notification's own count, so their sum is known.
    env = {**topics.env(broker), "NOTIF_MODEL": str(tiny_model_dir), "NOTIF_QUANTIZATION": "none",
           "NOTIF_DEVICE": "cpu", "NOTIF_MAX_BATCH_SIZE": "1", "NOTIF_COMMIT_INTERVAL_MS": "100"}
    worker = WorkerProcess(env, tmp_path / "worker.log", args=()).start()
    messages = notification_messages(6)
    try:
        await produce(broker, topics.input, [*messages, (b"bad", b"[]")], partitions=2)
        await worker.wait_ready(120)
        outputs = await read_all(broker, topics.output, at_least=6, timeout_s=60)
        dead = await read_all(broker, topics.dlq, at_least=1, timeout_s=10)
        scrape: dict[Any, float] = {}

        async def settled() -> bool:  # everything committed: the gauges reach their known resting values
            nonlocal scrape
            scrape = samples((await asyncio.to_thread(worker.get, "/metrics"))[1])
            lags = [value(scrape, "notif_consumer_lag", topic=topics.input, partition=p) for p in ("0", "1")]
            return value(scrape, "notif_in_flight_messages") == 0 and lags == [0, 0]
        await eventually(settled, 30, "the worker commits everything it consumed")
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
    # Names and label sets against the README: tests/unit/observe/test_metrics_contract.py; here the values.
    assert 'notif_model_info{' in metrics_text and 'quantization="none"' in metrics_text
    expect_known_values(scrape, topics, [value for _, value in messages], tiny_model_dir)
    info = next(line for line in metrics_text.splitlines() if line.startswith("notif_model_info{"))
    assert 'device="cpu"' in info and 'torch="' in info and 'cuda="' in info and 'dtype="float32"' in info
    events = [e["event"] for e in worker.events()]
    assert "model_loaded" in events and "worker_failed" not in events
    loaded = next(e for e in worker.events() if e["event"] == "model_loaded")
    assert loaded["device"] == "cpu" and loaded["torch"] and loaded["cuda"]


def expect_known_values(scrape: dict[Any, float], topics: Topics, values: list[bytes | None], model: Path) -> None:
    """The values the README's metrics must have after 6 results and 1 dead letter, all committed."""
    assert value(scrape, "notif_ready") == 1
    assert value(scrape, "notif_queue_depth") == 0
    assert value(scrape, "notif_paused_partitions") == 0
    assert value(scrape, "notif_assigned_partitions") == 2
    assert value(scrape, "notif_messages_consumed_total") == 7
    assert value(scrape, "notif_dead_letters_total", reason="not_an_object") == 1
    assert value(scrape, "notif_parse_failures_total") == 0
    assert value(scrape, "notif_end_to_end_latency_seconds_count") == 6
    for partition in ("0", "1"):
        assert value(scrape, "notif_consumer_lag", topic=topics.input, partition=partition) == 0
    from transformers import AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(str(model))
    frame = PromptTokens.of(tokenizer)
    tokens = [len(frame.prefix) + len(frame.suffix(render_user_message(decode_notification(v), tokenizer, 384)[0]))
              for v in values]
    assert value(scrape, "notif_batch_size_count") == value(scrape, "notif_batch_tokens_count") == 6
    assert value(scrape, "notif_batch_tokens_sum") == sum(tokens)


async def test_generate_mode_counts_each_parse_failure_in_the_metric(
        broker: str, make_topics: Callable[..., Awaitable[Topics]], tiny_model_dir: Path, tmp_path: Path) -> None:
    """A random model never writes valid JSON: every result is re-scored, and notif_parse_failures_total says so."""
    topics = await make_topics(partitions=1)
    env = {**topics.env(broker), "NOTIF_MODEL": str(tiny_model_dir), "NOTIF_QUANTIZATION": "none",
           "NOTIF_DEVICE": "cpu", "NOTIF_DECODING": "generate", "NOTIF_MAX_NEW_TOKENS": "8"}
    worker = WorkerProcess(env, tmp_path / "worker.log", args=()).start()
    try:
        await produce(broker, topics.input, notification_messages(4), partitions=1)
        await worker.wait_ready(120)
        outputs = await read_all(broker, topics.output, at_least=4, timeout_s=60)
        scrape = samples(worker.get("/metrics")[1])
        worker.signal(signal.SIGTERM)
        assert await worker.wait_exit(30) == 0, worker.log_tail()
    finally:
        worker.stop()
    decodings = [json.loads(r.value)["decoding"] for r in outputs]
    assert decodings == ["generate_fallback"] * 4
    assert value(scrape, "notif_parse_failures_total") == 4

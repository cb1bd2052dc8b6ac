"""The fast engine's self-check at start-up (worker/model/self_check.py), on the CPU with a fault injected.

A perturbed weight in the fast engine's dense copy (its choice head) makes it answer differently from the
reference: the worker then serves with the reference, says so in notif_engine_info and the log, and with
NOTIF_ENGINE=fast refuses to start. Without the fault the check passes and the fast engine serves.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from prometheus_client import CollectorRegistry

from tests.support import logged_events
from worker.commands.serve import EXIT_FAILED, serve
from worker.contract import ClassificationResult, Confidence, Notification
from worker.model.classifier import Classifier
from worker.model.cuda_graphs import GRAPH_MAX_TOKENS
from worker.model.engine import FastEngine
from worker.model.loading import LoadedModel, load_model
from worker.model.self_check import (
    DEFAULT_TOLERANCE,
    SHORT_PASS,
    EngineSelfCheckFailed,
    Tolerance,
    compare,
    probe_notifications,
    run_self_check,
)
from worker.observe.metrics import Metrics
from worker.settings import Settings

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def settings(tiny_model_dir: Path) -> Settings:
    return Settings.model_validate({"model": str(tiny_model_dir), "quantization": "none", "device": "cpu",
                                    "max_input_tokens": 96, "engine": "fast"})


def test_the_probe_has_mixed_lengths_and_one_truncated(settings: Settings) -> None:
    probe = probe_notifications()
    assert len(probe) >= 24 and len({len((n.body or "") + (n.title or "")) for n in probe}) > 10
    reference = Classifier(load_model(settings), settings.with_overrides(engine="reference"))
    assert sum(result.truncated for result in reference.classify(probe)) >= 1


def test_the_probe_takes_both_routes_of_a_gpu(settings: Settings) -> None:
    """At the default token budget the short pass fits a captured CUDA graph and the long one does not."""
    classifier = Classifier(load_model(settings), settings.with_overrides(max_input_tokens=384))
    engine = classifier.engine
    assert engine is not None
    probe = probe_notifications()

    def tokens(part: list[Notification]) -> int:
        trunks = classifier._trunks([classifier.prepare(n) for n in part])
        return sum(len(trunk) + engine.tree_size for trunk in trunks)

    assert tokens(probe[:SHORT_PASS]) <= GRAPH_MAX_TOKENS < tokens(probe[SHORT_PASS:])


def engine_events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The engine_self_check records, each with its level and its fields."""
    return [{"level": record.levelname, **vars(record)} for record in caplog.records
            if record.getMessage() == "engine_self_check"]


def test_a_sound_fast_engine_passes_and_serves(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="worker.model.classifier"):
        classifier = Classifier(load_model(settings), settings)
    assert classifier.engine is not None
    assert classifier.engine_info == {"engine": "fast", "reason": "self_check_passed"}
    [event] = engine_events(caplog)
    assert event["level"] == "INFO" and event["passed"] and event["engine"] == "fast"
    assert 0 < event["seconds"] < 60 and event["items"] == 32 and event["max_gap"] <= event["tolerance"] == 1e-4


def faulty_engine(settings: Settings) -> tuple[LoadedModel, FastEngine]:
    loaded = load_model(settings)
    sound = Classifier(loaded, settings)
    engine = sound.engine
    assert engine is not None
    generator = torch.Generator().manual_seed(0)
    engine.choice_head.add_(torch.randn(engine.choice_head.shape, generator=generator) * 0.5)  # a bad weight
    return loaded, engine


def test_a_faulty_fast_engine_falls_back_to_the_reference_and_says_so(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    loaded, engine = faulty_engine(settings)
    auto = settings.with_overrides(engine="auto")
    caplog.clear()  # only the faulty engine's check (a sound one ran above; its info shows when a test set INFO)
    with caplog.at_level(logging.ERROR, logger="worker.model.classifier"):
        classifier = Classifier(loaded, auto, engine=engine)
    assert classifier.engine is None  # the reference serves
    assert classifier.engine_info == {"engine": "reference", "reason": "self_check_failed"}
    [event] = engine_events(caplog)
    assert event["level"] == "ERROR" and not event["passed"] and event["engine"] == "reference"
    assert event["max_gap"] > event["tolerance"] and event["differing"]
    assert set(event["differing"]) <= {n.id for n in probe_notifications()}
    assert "self-check failed" in event["summary"] and "confidence gap largest" in event["summary"]
    reference = Classifier(loaded, settings.with_overrides(engine="reference"))
    probe = probe_notifications()
    assert [(r.folder, r.priority) for r in classifier.classify(probe)] == [
        (r.folder, r.priority) for r in reference.classify(probe)]
    metrics = Metrics(CollectorRegistry())
    metrics.engine_info.labels(**classifier.engine_info).set(1)
    assert metrics.registry.get_sample_value(
        "notif_engine_info", {"engine": "reference", "reason": "self_check_failed"}) == 1


def test_with_notif_engine_fast_the_failure_is_fatal(settings: Settings) -> None:
    loaded, engine = faulty_engine(settings)
    with pytest.raises(EngineSelfCheckFailed, match="NOTIF_ENGINE=fast makes this fatal") as failed:
        Classifier(loaded, settings, engine=engine)
    assert "answers differ on probe-" in str(failed.value) and "confidence gap largest" in str(failed.value)


def test_generate_decoding_checks_the_engine_too(settings: Settings) -> None:
    """generate mode calls the engine for every answer that does not parse: the probe scores it constrained."""
    loaded, engine = faulty_engine(settings)
    generate = settings.with_overrides(engine="auto", decoding="generate")
    classifier = Classifier(loaded, generate, engine=engine)
    assert classifier.engine_info == {"engine": "reference", "reason": "self_check_failed"}
    assert classifier.settings.decoding == "generate"


async def test_serve_exits_1_with_the_numbers_when_notif_engine_fast_fails(settings: Settings) -> None:
    loaded, engine = faulty_engine(settings)
    serving = settings.with_overrides(metrics_port=0, metrics_host="127.0.0.1")
    with logged_events() as events:  # capsys missed them in the full suite
        assert await serve(serving, lambda: Classifier(loaded, serving, engine=engine)) == EXIT_FAILED
        failed = [event for event in events() if event["event"] == "model_load_failed"]
    assert failed and "confidence gap largest" in failed[0]["error"], failed


def result(folder: str, confidence: float, priority: int = 1, priority_confidence: float = 0.9
           ) -> ClassificationResult:
    return ClassificationResult(id="x", folder=folder, priority=priority, priority_label="Low",
                                confidence=Confidence(folder=confidence, priority=priority_confidence),
                                decoding="constrained", truncated=False, model="m")


TOLERANCE = Tolerance(largest=0.1, mean=0.02)


def test_the_verdict_counts_answers_and_both_tolerances() -> None:
    assert compare([result("Work", 0.5)], [result("Work", 0.52)], TOLERANCE, 0.1).passed
    assert not compare([result("Work", 0.5)], [result("Work", 0.65)], TOLERANCE, 0.1).passed  # the largest
    assert compare([result("Work", 0.9)], [result("Alerts", 0.9)], TOLERANCE, 0.1).differing == ["x"]
    assert not compare([result("Work", 0.9, 1)], [result("Work", 0.9, 3)], TOLERANCE, 0.1).passed
    moved = compare([result("Work", 0.50, 1, 0.60)] * 4, [result("Work", 0.53, 1, 0.63)] * 4, TOLERANCE, 0.1)
    assert not moved.passed and moved.max_gap < TOLERANCE.largest and moved.mean_gap > TOLERANCE.mean  # all moved


def test_a_near_tie_is_no_failure_and_a_sure_flip_is() -> None:
    """Two answers both at most 0.5 + tolerance sure: per-choice probabilities within the tolerance allow
    either; the decision after it follows another branch, so its confidence is not compared."""
    tie = compare([result("Work", 0.55, 1, 0.2)], [result("Alerts", 0.54, 3, 0.99)], TOLERANCE, 0.1)
    assert tie.passed and tie.near_ties == ["x"] and tie.differing == [] and tie.max_gap == 0.0
    sure = compare([result("Work", 0.70)], [result("Alerts", 0.69)], TOLERANCE, 0.1)
    assert not sure.passed and sure.differing == ["x"]


def test_in_16_bit_bf16s_own_differences_pass_and_an_off_by_one_rotary_table_fails(
        tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NF4 (bf16 compute) with a random LoRA of the reference's shape, merged by the fast engine and kept beside
    the weights by the reference: apart by up to 0.04 when sound, which a 3e-2 bound would call a fault. The
    16-bit tolerance lets that through and stops positions off by one in the fast engine's rotary table."""
    from worker.bench.classifier import random_adapter

    settings = Settings.model_validate({"model": str(tiny_model_dir), "adapter": random_adapter(str(tiny_model_dir)),
                                        "quantization": "nf4", "device": "cpu", "engine": "fast"})
    classifier = Classifier(load_model(settings), settings)  # NOTIF_ENGINE=fast: a failed check would raise
    sound = classifier.engine_check
    assert sound is not None and sound.passed and sound.tolerance == DEFAULT_TOLERANCE
    engine = classifier.engine
    assert engine is not None
    rope = engine.net.rope
    monkeypatch.setattr(engine.net, "rope", lambda positions: rope(positions + 1))
    shifted = run_self_check(classifier, classifier._dtype)
    assert not shifted.passed and shifted.mean_gap > DEFAULT_TOLERANCE.mean, shifted.describe()

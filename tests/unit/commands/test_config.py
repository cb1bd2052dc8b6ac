"""`notif-worker config`: secrets masked in the resolved settings; the README's table is the generated one;
the membership and size-limit settings shown (resolved values and the table)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing

import pytest
from pydantic import SecretStr

from tests.readme import readme_settings_rows
from worker.commands.cli import build_parser, main
from worker.settings import Settings

NEW = ("max_key_bytes", "max_header_bytes", "max_poll_interval_ms", "session_timeout_ms", "heartbeat_interval_ms")


def test_config_shows_the_resolved_membership_settings(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NOTIF_MAX_POLL_INTERVAL_MS", "600000")
    assert main(["config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert {name: shown[name] for name in NEW} == {
        "max_key_bytes": 4096, "max_header_bytes": 32768, "max_poll_interval_ms": 600000,
        "session_timeout_ms": 10000, "heartbeat_interval_ms": 3000}
    assert main(["config", "--table"]) == 0
    table = capsys.readouterr().out
    assert all(f"`NOTIF_{name.upper()}`" in table for name in NEW)


def _secret_fields() -> list[str]:
    return [name for name, field in Settings.model_fields.items()
            if SecretStr in (typing.get_args(field.annotation) or (field.annotation,))]


def test_config_masks_every_secret() -> None:
    secrets = {f"NOTIF_{name.upper()}": f"s3cret-{name}-value" for name in _secret_fields()}
    assert "NOTIF_SASL_PASSWORD" in secrets
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NOTIF_")}, **secrets, "PYTHONFAULTHANDLER": "1"}
    run = subprocess.run([sys.executable, "-m", "worker", "config"], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    for secret in secrets.values():
        assert secret not in run.stdout + run.stderr
    shown = json.loads(run.stdout)
    assert all(shown[name] == "**********" for name in _secret_fields())
    assert shown["kafka_bootstrap_servers"] == Settings.model_fields["kafka_bootstrap_servers"].default  # not all


def test_readme_configuration_table_is_the_generated_table(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["config", "--table"])
    assert args.func(args) == 0
    generated = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| `NOTIF_")]
    assert len(generated) == len(Settings.model_fields)
    assert readme_settings_rows() == generated, "README.md's table differs: paste `notif-worker config --table`"

"""`notif-worker config` shows the membership and size-limit settings (resolved values and the table)."""

from __future__ import annotations

import json

import pytest

from worker.commands.cli import main

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

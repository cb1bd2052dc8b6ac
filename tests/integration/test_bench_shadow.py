"""`bench shadow` on the tiny model: serving and shadow timed on the same batches, their ratio reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.commands.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_the_shadow_is_timed_beside_the_serving_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "shadow.json"
    assert main(["bench", "shadow", "--size", "tiny", "--device", "cpu", "--batch-sizes", "2,4", "--n", "8",
                 "--max-seconds", "5", "--json", str(out), "--plot", str(tmp_path / "shadow.png")]) == 0
    report = json.loads(out.read_text())
    assert [row["batch_size"] for row in report["rows"]] == [2, 4]
    for row in report["rows"]:
        assert row["items"] == 8 and row["serving_p50_ms"] > 0 and row["shadow_p50_ms"] > 0
        assert row["shadow_cost"] == pytest.approx(
            row["items_per_s_serving_alone"] / row["items_per_s_with_shadow"] - 1, abs=0.05)
        assert 0 <= row["both_agree"] <= 1
    assert "| batch | serving p50 ms | shadow p50 ms |" in capsys.readouterr().out
    assert (tmp_path / "shadow.png").stat().st_size > 5000

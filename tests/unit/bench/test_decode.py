"""The decode benchmark runs every row (contract before, reader after, each envelope) and writes them as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from worker.bench.decode import SAMPLES, run_decode


def test_every_row_is_timed_and_written(tmp_path: Path) -> None:
    out = tmp_path / "decode.json"
    assert run_decode(argparse.Namespace(n=5, repeat=2, json=str(out))) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [row["path"] for row in rows[:2]] == ["contract only (before)", "reader (after)"]
    assert [row["records"] for row in rows[2:]] == list(SAMPLES)
    assert all(row["us_per_record"] > 0 for row in rows)

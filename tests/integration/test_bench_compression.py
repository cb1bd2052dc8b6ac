"""`notif-worker bench compression` on the suite's broker: every codec's run, bytes that say it compressed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from worker.commands.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_bench_compression_measures_every_codec(broker: str, tmp_path: Path) -> None:
    out, n = tmp_path / "compression.json", 400
    started = time.monotonic()
    assert main(["bench", "compression", "--bootstrap", broker, "--n", str(n), "--repeat", "1",
                 "--json", str(out), "--plot", str(tmp_path / "compression.png")]) == 0
    wall = time.monotonic() - started
    report = json.loads(out.read_text())
    assert report["codecs"] == ["none", "gzip", "snappy", "lz4", "zstd"] and report["broker"] == broker
    assert sorted(run["codec"] for run in report["runs"]) == sorted(report["codecs"])
    assert sum(run["seconds"] for run in report["runs"]) <= wall
    for run in report["runs"]:
        assert run["msgs_per_s"] == pytest.approx(n / run["seconds"], rel=0.02)
        assert run["cpu_us_per_msg"] > 0
    # Uncompressed, the wire holds at least every value; each codec's batches hold far fewer bytes than that
    # (the results are repetitive JSON), so the bytes are of the batches that codec wrote.
    assert report["none"]["wire_bytes"] >= n * report["value_bytes_per_msg"]
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        assert report[codec]["wire_bytes"] * 2 < report["none"]["wire_bytes"], codec
        assert report[codec]["fewer_bytes_than_none"] > 2
    assert (tmp_path / "compression.png").stat().st_size > 0

"""`notif-worker bench pipeline` and `bench latency` on the suite's broker: every JSON field, sane values."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from worker.commands.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def test_bench_pipeline_writes_both_sides(broker: str, tmp_path: Path) -> None:
    out = tmp_path / "pipeline.json"
    started = time.monotonic()
    assert main(["bench", "pipeline", "--bootstrap", broker, "--n", "300", "--repeat", "1",
                 "--json", str(out), "--plot", str(tmp_path / "pipeline.png")]) == 0
    wall = time.monotonic() - started
    report = json.loads(out.read_text())
    assert report["machine"]["cpu"] and report["machine"]["gpu"]
    assert report["n"] == 300 and report["broker"] == broker
    assert sorted(run["side"] for run in report["runs"]) == ["bare", "worker"]
    for run in report["runs"]:
        assert run["outputs"] == 300  # every message got exactly one result
        assert run["seconds"] > 0 and run["msgs_per_s"] > 0 and run["cpu_us_per_msg"] > 0
    # The timings are of these runs: together no longer than the command took (a wrong clock or unit fails),
    # and each rate is the messages over the run's own time.
    assert sum(run["seconds"] for run in report["runs"]) <= wall
    for run in report["runs"]:
        assert run["msgs_per_s"] == pytest.approx(run["outputs"] / run["seconds"], rel=0.02)
    assert (tmp_path / "pipeline.png").stat().st_size > 0


def test_bench_pipeline_output_runs_each_output_side_on_inputs_with_trace_headers(broker: str, tmp_path: Path) -> None:
    out = tmp_path / "output.json"
    assert main(["bench", "pipeline", "--bootstrap", broker, "--compare", "output", "--n", "300", "--repeat", "1",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["input_headers"] == ["traceparent", "tracestate", "baggage", "x-request-id"]
    assert sorted(run["side"] for run in report["runs"]) == ["enriched", "none", "trace"]
    assert all(run["outputs"] == 300 for run in report["runs"])
    # enriched results carry their input (about 200 bytes of JSON each) besides the classification
    assert report["enriched_output_bytes"] > report["none_output_bytes"] > 0


def test_bench_latency_reads_the_worker_histogram(broker: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "latency.json"
    monkeypatch.setenv("NOTIF_BATCHES_IN_FLIGHT", "1")  # the worker subprocess inherits it; the report says so
    monkeypatch.setenv("NOTIF_SASL_PASSWORD", "s3cret")  # never written down
    # Rates far below what the instant classifier moves here (thousands/s): saturation would be a real defect,
    # not the loaded 2-core machine.
    assert main(["bench", "latency", "--bootstrap", broker, "--rates", "20,10", "--seconds", "1.5",
                 "--json", str(out), "--plot", str(tmp_path / "latency.png")]) == 0
    report = json.loads(out.read_text())
    assert report["classifier"].startswith("instant")
    phases = report["phases"]
    assert [phase["rate"] for phase in phases] == [10, 20]  # ascending
    for phase in phases:
        assert phase["sent"] > 0
        assert phase["latency_count"] == phase["sent"]  # every message of the phase, and only those
        assert 0 < phase["p50_ms"] <= phase["p95_ms"] <= phase["p99_ms"]
        assert phase["drain_s"] is not None
        assert not phase["saturated"]
    assert report["saturation_rate"] is None
    assert (tmp_path / "latency.png").stat().st_size > 0
    assert report["settings"]["NOTIF_BATCHES_IN_FLIGHT"] == "1"
    assert "NOTIF_SASL_PASSWORD" not in report["settings"] and "s3cret" not in out.read_text()
    # the saved report side by side with itself: --compare runs nothing, plots to --plot
    assert main(["bench", "latency", "--compare", f"a=b={out}", f"c={out}", "--plot", str(tmp_path / "cmp.png")]) == 0
    assert (tmp_path / "cmp.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="--plot"):
        main(["bench", "latency", "--compare", f"a={out}"])

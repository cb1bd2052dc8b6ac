"""`notif-worker classify`: JSONL in, JSONL out, rejects reported by line, summary at the end."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support import run_python, subprocess_env

pytestmark = pytest.mark.integration

LINES = [
    b'{"id": "a", "app": "Slack", "title": "Deploy failed", "body": "prod pipeline red"}',
    b"Your package was delivered",
    b"[1, 2, 3]",
    b'{"title": 7}',
    b"",
    b'{"app": "Gmail", "title": "50% off everything", "unknown": true}',
    b"\xff\xfe",
]


def run_classify(tiny_model_dir: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(LINES) + b"\n")
    return run_python(["-m", "worker", "classify", str(source), "--out", str(tmp_path / "out.jsonl"),
                       "--model", str(tiny_model_dir), "--quantization", "none", "--device", "cpu", *extra],
                      env=subprocess_env(NOTIF_MAX_BATCH_SIZE="4"), timeout_s=240)


@pytest.mark.parametrize("decoding", ["constrained", "generate"])
def test_classify_file(tiny_model_dir: Path, tmp_path: Path, decoding: str) -> None:
    done = run_classify(tiny_model_dir, tmp_path, "--decoding", decoding)
    assert done.returncode == 1, done.stderr  # some lines were rejected
    results = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in results] == ["a", "line-2", "line-6"]
    expected_mode = "constrained" if decoding == "constrained" else "generate_fallback"
    assert {r["decoding"] for r in results} == {expected_mode}
    for line, reason in [(3, "not_an_object"), (4, "wrong_type"), (5, "empty"), (7, "invalid_utf8")]:
        assert f"line {line}: rejected ({reason})" in done.stderr
    summary = next(line for line in done.stderr.splitlines() if line.startswith("summary:"))
    assert "lines=7 classified=3 rejected=4" in summary
    assert f"parse_failures={3 if decoding == 'generate' else 0}" in summary


def test_bad_model_path_exits_2_with_one_line(tmp_path: Path) -> None:
    done = run_classify(tmp_path / "missing-model", tmp_path)
    assert done.returncode == 2
    assert "error: tokenizer path" in done.stderr and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr

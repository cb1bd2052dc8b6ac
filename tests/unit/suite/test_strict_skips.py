"""A skipped test fails the run (tests/strict_skips.py), unless the run allows skips on purpose."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.strict_skips import ALLOW_ENV

ROOT = Path(__file__).resolve().parents[3]


def _run(tmp_path: Path, body: str, *args: str, allow: bool = False) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(f"import pytest\n\n\n{body}\n", encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs a GPU\n", encoding="utf-8")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1",
           **({ALLOW_ENV: "1"} if allow else {})}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.strict_skips",
                           "-q", *args, str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("body", [
    "def test_skipped():\n    pytest.skip('no feature')",
    "pytest.importorskip('a_module_that_is_not_installed')\n\n\ndef test_any():\n    pass",
    "@pytest.mark.skipif(True, reason='x')\ndef test_skipped():\n    pass",
])
def test_a_skip_fails_the_run(tmp_path: Path, body: str) -> None:
    run = _run(tmp_path, body)
    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout
    assert "a skip is not a pass" in run.stdout


def test_a_run_without_skips_passes(tmp_path: Path) -> None:
    assert _run(tmp_path, "def test_ok():\n    pass").returncode == pytest.ExitCode.OK


def test_a_run_that_allows_skips_passes_with_one(tmp_path: Path) -> None:
    assert _run(tmp_path, "def test_skipped():\n    pytest.skip('x')", allow=True).returncode == pytest.ExitCode.OK


def test_a_deselected_gpu_test_is_not_a_skip(tmp_path: Path) -> None:
    body = "@pytest.mark.gpu\ndef test_gpu():\n    pass\n\n\ndef test_cpu():\n    pass"
    run = _run(tmp_path, body, "-m", "not gpu")
    assert run.returncode == pytest.ExitCode.OK, run.stdout
    assert "1 deselected" in run.stdout

"""The doctor's device check (worker/model/preflight.py): the torch build against the NVIDIA driver.

No GPU here: a stand-in nvidia-smi on PATH states the driver, as the real one does on a GPU host.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from worker.model.preflight import check_device, driver_too_old, driver_version
from worker.settings import Settings


def test_a_driver_older_than_the_cuda_build_is_named() -> None:
    too_old = "driver 560.35.03 is older than torch's CUDA 13.0 needs (R580 or newer)"
    assert driver_too_old("13.0", "560.35.03") == too_old
    assert driver_too_old("13.0", "580.65.06") is None
    assert driver_too_old("12.6", "535.104.05") is None  # CUDA 12 runs on R525+ by minor-version compatibility
    assert driver_too_old("12.6", "470.42.01") is not None
    assert driver_too_old(None, "560.35.03") is None and driver_too_old("13.0", None) is None


@pytest.fixture
def old_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An R560 driver on PATH and torch's CUDA 13.0 build, on this host with no GPU."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 560.35.03\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    assert not torch.cuda.is_available()
    return "560.35.03"


def test_notif_device_cuda_under_an_old_driver_fails_with_the_driver_fix(old_driver: str) -> None:
    check = check_device(Settings(device="cuda"))
    assert check.status == "fail" and f"driver {old_driver} is older" in check.detail and "R580" in check.detail
    assert "CUDA 12.6" in check.fix


def test_auto_under_an_old_driver_warns_that_the_cpu_serves_and_why(old_driver: str) -> None:
    check = check_device(Settings(device="auto"))
    assert check.status == "warn" and "no usable GPU" in check.detail and f"driver {old_driver}" in check.detail


def test_without_nvidia_smi_the_check_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert driver_version() is None
    check = check_device(Settings(device="cpu"))
    assert check.status == "ok" and "no NVIDIA driver" in check.detail and "NOTIF_DEVICE=cpu" in check.detail

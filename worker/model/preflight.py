"""Preflight of the model side (`notif-worker doctor`): torch and the device, bitsandbytes, the files, the engine.

Each check returns a Check: ok, warn or fail, what it saw, and for a failure the fix.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from worker.model.adapters import CALIBRATION_FILE, read_calibration
from worker.model.loading import ModelLoadError, check_adapter_contract, resolve_device, resolve_quantization
from worker.settings import Settings

Status = Literal["ok", "warn", "fail"]
# The oldest Linux driver branch that runs a CUDA major version (12.x: by minor-version compatibility)
MIN_DRIVER = {"13": 580, "12": 525}
SMI_TIMEOUT_S = 10.0
HUB_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def check_device(settings: Settings) -> Check:
    """The torch build against the NVIDIA driver and the device NOTIF_DEVICE asks for."""
    driver = driver_version()
    build = (f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}), "
             + (f"NVIDIA driver {driver}" if driver else "no NVIDIA driver (no nvidia-smi)"))
    too_old = driver_too_old(torch.version.cuda, driver)
    try:
        device = resolve_device(settings.device)
    except (ModelLoadError, RuntimeError, ValueError) as exc:
        return Check("device", "fail", f"{build}: {too_old or exc}"[:400], _device_fix(too_old))
    if device.type == "cuda":
        if (device.index or 0) >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            return Check("device", "fail", f"{build}: NOTIF_DEVICE={settings.device}, but this host has {count} "
                         "GPU(s)", "set NOTIF_DEVICE=cuda (the first GPU), or a lower index")
        return Check("device", "ok", f"{build} on {torch.cuda.get_device_name(device)}")
    if settings.device != "auto":
        return Check("device", "ok", f"{build}: the CPU, as NOTIF_DEVICE={settings.device} asks")
    if torch.version.cuda:
        return Check("device", "warn", f"{build}, but no usable GPU: {too_old or 'the worker runs on the CPU'}",
                     _device_fix(too_old))
    return Check("device", "warn", f"{build}: CPU only (a CPU build of torch)")


def driver_version() -> str | None:
    """The NVIDIA driver's version as nvidia-smi states it; None where there is no nvidia-smi or it fails."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        run = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=SMI_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    versions = run.stdout.split()
    return versions[0] if run.returncode == 0 and versions else None


def driver_too_old(cuda_build: str | None, driver: str | None) -> str | None:
    """Why this driver cannot run this CUDA build of torch, or None: it can, or one of them is unknown (pure)."""
    if not cuda_build or not driver:
        return None
    needed = MIN_DRIVER.get(cuda_build.split(".")[0])
    branch = driver.split(".")[0]
    if needed is None or not branch.isdigit() or int(branch) >= needed:
        return None
    return f"driver {driver} is older than torch's CUDA {cuda_build} needs (R{needed} or newer)"


def _device_fix(too_old: str | None) -> str:
    if too_old:
        return ("upgrade the NVIDIA driver, or run the image built for CUDA 12.6 (docs/DEPLOY.md, 'The image'); "
                "NOTIF_DEVICE=cpu runs without the GPU (slowly)")
    return ("give the container the GPU (--gpus, the NVIDIA device plugin) and check `nvidia-smi`, or set "
            "NOTIF_DEVICE=auto or cpu")


def check_bitsandbytes(settings: Settings) -> Check:
    """bitsandbytes' NF4 kernels: a tensor quantized and dequantized on the device serve would use."""
    try:
        device = resolve_device(settings.device)
    except (ModelLoadError, RuntimeError, ValueError):
        return Check("bitsandbytes", "warn", "skipped: no usable device (see the device check)")
    if resolve_quantization(settings.quantization, device) != "nf4":
        return Check("bitsandbytes", "ok", f"not used: NOTIF_QUANTIZATION={settings.quantization} on {device.type}")
    try:
        import bitsandbytes.functional as bnbf

        weight = torch.randn(64, 64, device=device, dtype=torch.bfloat16)
        packed, state = bnbf.quantize_4bit(weight, quant_type="nf4")
        error = (bnbf.dequantize_4bit(packed, state) - weight).abs().mean().item()
    except Exception as exc:  # an import error, a missing kernel, a CUDA error: each is this check's failure
        return Check("bitsandbytes", "fail", f"NF4 round trip failed: {type(exc).__name__}: {exc}"[:300],
                     "install the bitsandbytes build for this CUDA (pip install -c constraints.txt bitsandbytes), "
                     "or NOTIF_QUANTIZATION=none")
    status: Status = "ok" if error < 0.2 else "fail"
    return Check("bitsandbytes", status, f"NF4 round trip on {device.type}: mean error {error:.3f}",
                 "" if status == "ok" else "a broken NF4 kernel: reinstall bitsandbytes")


def check_model_files(settings: Settings) -> list[Check]:
    """The base model and the adapter: present, the adapter's contract matches, its calibration is there."""
    checks = []
    model = Path(settings.model)
    if model.exists():
        has_config = (model / "config.json").is_file()
        checks.append(Check("model", "ok" if has_config else "fail", f"{model}: "
                            + ("config.json present" if has_config else "no config.json"),
                            "" if has_config else "point NOTIF_MODEL at a model directory or a hub id"))
    else:
        checks.append(_hub_model(settings.model))
    if not settings.adapter:
        checks.append(Check("adapter", "warn", "no NOTIF_ADAPTER: the bare base model answers (untrained)",
                            "train one: notif-train train ... --out adapters/v1; set NOTIF_ADAPTER"))
        return checks
    try:
        contract = check_adapter_contract(settings.adapter)
    except (ModelLoadError, OSError, ValueError) as exc:
        checks.append(Check("adapter", "fail", str(exc)[:300], "use an adapter built by notif-train for this "
                            "contract version (its directory holds notif_contract.json)"))
        return checks
    checks.append(Check("adapter", "ok", f"{settings.adapter}: contract {contract.get('contract_version')}"))
    checks.append(_calibration(settings.adapter))
    return checks


def _calibration(adapter: str) -> Check:
    fix = f"notif-train eval --adapter {adapter} --data TEST.jsonl --calibrate (writes {CALIBRATION_FILE})"
    try:
        temperatures = read_calibration(adapter)
    except ModelLoadError as exc:
        return Check("calibration", "fail", str(exc)[:300], fix)
    if not temperatures:
        return Check("calibration", "warn", f"no {CALIBRATION_FILE}: confidences are uncalibrated", fix)
    return Check("calibration", "ok", f"temperatures {temperatures}")


def _hub_model(model_id: str) -> Check:
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    cached = try_to_load_from_cache(model_id, "config.json")
    if isinstance(cached, str):
        return Check("model", "ok", f"{model_id}: in the Hugging Face cache ({Path(cached).parent})")
    local = "set NOTIF_MODEL to a local model directory, or HF_HOME to a cache that holds it"
    if constants.HF_HUB_OFFLINE:
        return Check("model", "fail", f"{model_id}: not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                     "the hub is off (HF_HUB_OFFLINE)", f"{local}; or unset HF_HUB_OFFLINE")
    try:
        get_hf_file_metadata(hf_hub_url(model_id, "config.json"), timeout=HUB_TIMEOUT_S)
    except Exception as exc:  # no route, a proxy, 401 for a gated model, 404: each is this check's failure
        return Check("model", "fail", f"{model_id}: not cached, and the hub ({constants.ENDPOINT}) did not "
                     f"serve it: {type(exc).__name__}: {exc}"[:400],
                     f"check the way to the hub (HF_ENDPOINT, a proxy), HF_TOKEN for a gated model; or {local}")
    return Check("model", "ok", f"{model_id}: not cached; the hub ({constants.ENDPOINT}) has it: serve downloads it")


def check_engine(settings: Settings) -> Check:
    """Load the model as serve would; the fast engine's self-check runs as it loads (worker/model/self_check.py)."""
    from worker.model.classifier import Classifier
    from worker.model.self_check import EngineSelfCheckFailed

    try:
        classifier = Classifier.from_settings(settings)
    except EngineSelfCheckFailed as exc:
        return Check("engine", "fail", str(exc), "NOTIF_ENGINE=auto serves with the reference engine instead; "
                     "report the numbers with the GPU, driver and torch build")
    except Exception as exc:  # the model load's own error names the file or setting
        return Check("engine", "fail", f"the model did not load: {exc}"[:400], "fix the model check above")
    info = classifier.engine_info
    status: Status = "warn" if info["reason"] == "self_check_failed" else "ok"
    verdict = f": {classifier.engine_check.describe()}" if classifier.engine_check is not None else ""
    return Check("engine", status, f"{info['engine']} ({info['reason']}){verdict}",
                 "" if status == "ok" else "the reference serves (slower, correct); report the numbers with the GPU, "
                 "driver and torch build")

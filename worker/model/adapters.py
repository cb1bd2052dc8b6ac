"""Adapters on one loaded base: their ids, calibration, and loading a second one beside the serving one.

An adapter's id is its resolved directory's name and a short hash of its weights (``v2@1a2b3c4d``), so a
result names the exact weights that produced it even when a symlink moved. An adapter directory may hold
``calibration.json`` (written by ``notif-train eval --calibrate``): one temperature per decision, applied
to the restricted softmax logits of every confidence; a temperature keeps the argmax, so answers never
change. Several adapters share one base through peft's named adapters: the hot swap loads the new one
beside the serving one before switching, the shadow adapter stays loaded beside it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.model.loading import ModelLoadError, check_adapter_contract

CALIBRATION_FILE = "calibration.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
ID_HASH_CHARS = 8
DECISIONS = ("folder", "priority")


@dataclass
class Adapter:
    """One adapter as the classifier serves it; ``name`` is its peft name ("" when merged or bare)."""

    name: str
    path: str | None
    adapter_id: str | None
    temperatures: dict[str, float] = field(default_factory=dict)  # empty: uncalibrated
    prefix_kv: Any = None  # the system prompt's keys and values under this adapter, computed once
    engine: Any = None  # its fast engine (worker/model/engine.py merges the active adapter), None: the reference


def adapter_id(path: str) -> str:
    """``<directory name>@<sha256 of the weights, 8 hex>``; just the name when no weight file is local."""
    resolved = Path(path).resolve()
    for name in WEIGHT_FILES:
        weights = resolved / name
        if weights.is_file():
            digest = hashlib.sha256()
            with weights.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            return f"{resolved.name}@{digest.hexdigest()[:ID_HASH_CHARS]}"
    return resolved.name if resolved.exists() else path


def read_calibration(path: str) -> dict[str, float]:
    """The adapter's temperatures per decision ({} when it has no calibration.json)."""
    file = Path(path) / CALIBRATION_FILE
    if not file.is_file():
        return {}
    try:
        temperatures = json.loads(file.read_text())["temperature"]
        values = {decision: float(temperatures[decision]) for decision in DECISIONS}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{file} is not a notif-train calibration file: {exc!r}") from exc
    if not all(math.isfinite(t) and t > 0 for t in values.values()):
        raise ModelLoadError(f"{file}: temperatures must be positive numbers, got {values}")
    return values


def describe(path: str | None, name: str) -> Adapter:
    """The Adapter record of ``path`` (None: the bare base model)."""
    if path is None:
        return Adapter(name, None, None)
    return Adapter(name, path, adapter_id(path), read_calibration(path))


def load_beside(model: Any, path: str, name: str) -> Adapter:
    """Load the adapter at ``path`` into a peft model under ``name``, leaving the active adapter as it is."""
    if not hasattr(model, "load_adapter") or not hasattr(model, "peft_config"):
        raise ModelLoadError("adapters can be loaded beside the serving one only when it is not merged "
                             "(NOTIF_MERGE_ADAPTER=false) and an adapter is served (NOTIF_ADAPTER)")
    check_adapter_contract(path)
    adapter = describe(path, name)  # reads calibration.json first: a bad one loads no weights
    try:
        model.load_adapter(path, adapter_name=name, is_trainable=False)
    except Exception as exc:
        raise ModelLoadError(f"could not load adapter {path!r} beside the serving one: "
                             f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc) else ''}"
                             ) from exc
    return adapter

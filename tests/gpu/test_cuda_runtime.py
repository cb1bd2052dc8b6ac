"""Where the model runs, on a CUDA GPU: auto picks NF4 on cuda and the runtime names the GPU and CUDA build
(run by scripts/gpu_check.sh)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from worker.model.loading import describe_placement, load_model
from worker.settings import Settings

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_auto_loads_nf4_on_the_gpu_and_reports_the_cuda_build(tiny_model_dir: Any) -> None:
    settings = Settings.model_validate({"model": str(tiny_model_dir), "device": "auto", "quantization": "auto"})
    loaded = load_model(settings)
    assert loaded.quantization == "nf4" and loaded.device.type == "cuda"
    assert loaded.runtime["cuda"] == torch.version.cuda
    assert loaded.runtime["gpu"] == torch.cuda.get_device_name(0)
    assert describe_placement(settings) == "NF4 4-bit weights on cuda"

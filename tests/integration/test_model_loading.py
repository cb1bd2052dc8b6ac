"""Model loading: devices, pad/eos, adapters and their contract, and clear errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.integration.adapters import make_adapter
from worker.model.loading import ModelLoadError, describe_placement, load_model
from worker.settings import Settings

pytestmark = pytest.mark.integration


def test_pad_and_eos_are_qwen3s(make_settings: Callable[..., Settings]) -> None:
    loaded = load_model(make_settings())
    assert loaded.tokenizer.pad_token == "<|endoftext|>"
    assert loaded.tokenizer.eos_token == "<|im_end|>"
    assert loaded.model.generation_config.eos_token_id == loaded.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert loaded.device == torch.device("cpu") and loaded.dtype == torch.float32
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_missing_path_is_one_clear_error(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(make_settings(model=str(tmp_path / "nope")))


def test_an_offline_hub_is_one_clear_error(make_settings: Callable[..., Settings],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # huggingface_hub reads HF_HUB_OFFLINE once, at import: setting only the variable here left the test going
    # to the network, where an unreachable hub takes the same path after ~47 s of huggingface_hub's retries.
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match=r"could not fetch tokenizer 'Qwen/definitely-not-cached' from the "
                                             r"Hugging Face hub .*check the network or point to a local directory"):
        load_model(make_settings(model="Qwen/definitely-not-cached"))


def test_cuda_on_a_cpu_machine_is_refused(make_settings: Callable[..., Settings]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ModelLoadError, match=r"finds no usable GPU: check nvidia-smi"):
        load_model(make_settings(device="cuda"))


def test_auto_quantization_takes_full_weights_on_a_cpu_and_reports_the_runtime(
        make_settings: Callable[..., Settings]) -> None:
    loaded = load_model(make_settings(quantization="auto"))
    assert (loaded.quantization, loaded.dtype) == ("none", torch.float32)
    assert loaded.runtime == {"device": "cpu", "torch": torch.__version__, "cuda": torch.version.cuda or "none",
                              "quantization": "none", "dtype": "float32"}
    assert describe_placement(make_settings(quantization="auto")) == "full float32 weights on cpu"
    assert describe_placement(make_settings(quantization="nf4")) == "NF4 4-bit weights on cpu"


def test_merge_needs_full_weights(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ModelLoadError, match="NOTIF_QUANTIZATION=none"):
        load_model(make_settings(quantization="nf4", merge_adapter=True, adapter="x"))


def test_adapter_with_matching_contract_loads_and_merges(make_settings: Callable[..., Settings],
                                                         tiny_model_dir: Path, tmp_path: Path) -> None:
    from worker.contract import contract_fingerprint

    adapter = make_adapter(str(tiny_model_dir), tmp_path / "adapter", contract=contract_fingerprint())
    loaded = load_model(make_settings(adapter=str(adapter)))
    assert "PeftModel" in type(loaded.model).__name__
    assert loaded.name.endswith(f"+{adapter}")
    merged = load_model(make_settings(adapter=str(adapter), merge_adapter=True))
    assert "PeftModel" not in type(merged.model).__name__


def test_adapter_without_contract_is_refused(make_settings: Callable[..., Settings], tiny_model_dir: Path,
                                             tmp_path: Path) -> None:
    adapter = make_adapter(str(tiny_model_dir), tmp_path / "adapter", contract=None)
    with pytest.raises(ModelLoadError, match="not built by notif-train"):
        load_model(make_settings(adapter=str(adapter)))


def test_adapter_from_another_contract_is_refused(make_settings: Callable[..., Settings],
                                                  tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = make_adapter(str(tiny_model_dir), tmp_path / "adapter", contract={"contract_version": "0.1"})
    with pytest.raises(ModelLoadError, match=r"contract '0\.1'"):
        load_model(make_settings(adapter=str(adapter)))


def test_adapter_for_another_base_is_refused(make_settings: Callable[..., Settings], tmp_path: Path,
                                             tokenizer_dir: Path, tiny_model_dir: Path) -> None:
    from worker.contract import contract_fingerprint
    from worker.dev.models import QWEN3_TINY, build_random_qwen3

    other = build_random_qwen3(tmp_path / "other", size="tiny", seed=1, tokenizer_dir=tokenizer_dir)
    config = json.loads((other / "config.json").read_text())
    config.update(hidden_size=96, head_dim=24, intermediate_size=192)
    assert json.loads((tiny_model_dir / "config.json").read_text())["hidden_size"] != config["hidden_size"]
    from transformers import Qwen3Config, Qwen3ForCausalLM

    wider = tmp_path / "wider"
    Qwen3ForCausalLM(Qwen3Config(**{k: v for k, v in config.items() if k in QWEN3_TINY})).save_pretrained(
        str(wider))
    adapter = make_adapter(str(wider), tmp_path / "adapter", contract=contract_fingerprint())
    with pytest.raises(ModelLoadError, match="another base model"):
        load_model(make_settings(adapter=str(adapter)))

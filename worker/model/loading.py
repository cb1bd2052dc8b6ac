"""Model loading: base model (hub id or path), NF4 or full weights, LoRA adapter, device, pad/eos tokens.

The one place that turns Settings into a ready model; the worker, the trainer and the benchmarks use it.
Library errors are translated here into one ModelLoadError with a message a user can act on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from worker.contract import CONTRACT_VERSION, compatible_contract, contract_fingerprint
from worker.settings import Settings

PAD_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"
CONTRACT_FILE = "notif_contract.json"

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """The model, tokenizer or adapter could not be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class LoadedModel:
    model: Any  # a transformers causal LM, possibly wrapped by peft
    tokenizer: Any
    device: torch.device
    name: str  # what results report as "model": base, plus "+adapter" when one is loaded
    quantization: str
    dtype: torch.dtype
    runtime: dict[str, str] = field(default_factory=dict)  # runtime_info(): logged, and in notif_model_info


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.version.cuda:
            log.warning("NOTIF_DEVICE=auto: torch %s is a CUDA %s build but finds no usable GPU; running on the CPU",
                        torch.__version__, torch.version.cuda)
        return torch.device("cpu")
    device = torch.device(setting)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            f"NOTIF_DEVICE={setting} but torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}) finds no "
            "usable GPU: check nvidia-smi, that the driver is new enough for that CUDA (CUDA 13: R580 or newer), "
            "and that the container was given the GPU (--gpus, the NVIDIA device plugin); or use auto or cpu")
    return device


def resolve_quantization(setting: str, device: torch.device) -> str:
    """auto: NF4 on a GPU (the reference), full weights on a CPU, where bitsandbytes' 4-bit kernels are slow."""
    if setting == "auto":
        return "nf4" if device.type == "cuda" else "none"
    return setting


def runtime_info(device: torch.device, quantization: str, dtype: torch.dtype) -> dict[str, str]:
    """Where and how the model runs, with the torch and CUDA builds: the worker logs it at start."""
    info = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda or "none",
            "quantization": quantization, "dtype": str(dtype).removeprefix("torch.")}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def describe_placement(settings: Settings) -> str:
    """What `load_model` will pick, in words, for start-up lines: e.g. "NF4 4-bit on cuda"."""
    try:
        device = resolve_device(settings.device)
    except ModelLoadError:
        return f"quantization {settings.quantization}, device {settings.device}"
    quantization = resolve_quantization(settings.quantization, device)
    settings = settings.with_overrides(quantization=quantization)
    dtype = str(resolve_dtype(settings, device)).removeprefix("torch.")
    weights = "NF4 4-bit weights" if quantization == "nf4" else f"full {dtype} weights"
    return f"{weights} on {device}"


def resolve_dtype(settings: Settings, device: torch.device) -> torch.dtype:
    """Compute dtype: bf16 for NF4 (the reference); otherwise bf16 on GPU and float32 on CPU unless set."""
    if settings.dtype != "auto":
        return getattr(torch, settings.dtype)  # type: ignore[no-any-return]
    if resolve_quantization(settings.quantization, device) == "nf4" or device.type == "cuda":
        return torch.bfloat16
    return torch.float32


def quantization_config(compute_dtype: torch.dtype = torch.bfloat16) -> Any:
    """The reference's 4-bit setup: NF4, double quantization, bf16 compute."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def load_tokenizer(model_id: str) -> Any:
    """The model's tokenizer with Qwen3's pad and end-of-turn tokens set."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id)
    except Exception as exc:
        raise ModelLoadError(_explain(model_id, "tokenizer", exc)) from exc
    tokenizer.pad_token = PAD_TOKEN
    tokenizer.eos_token = EOS_TOKEN
    tokenizer.padding_side = "left"
    return tokenizer


def load_base_model(settings: Settings, device: torch.device, dtype: torch.dtype) -> Any:
    """The base causal LM on `device`, NF4-quantized or in `dtype`."""
    from transformers import AutoModelForCausalLM

    settings = settings.with_overrides(quantization=resolve_quantization(settings.quantization, device))
    # sdpa: the classifier feeds its answer tree with a 4D attention mask, which flash kernels do not take.
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": "sdpa"}
    if settings.quantization == "nf4":
        kwargs["quantization_config"] = quantization_config(dtype)
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(settings.model, **kwargs)
    except Exception as exc:
        raise ModelLoadError(_explain(settings.model, "model", exc)) from exc
    if settings.quantization == "none":
        model.to(device)
    return model


def load_model(settings: Settings) -> LoadedModel:
    """Settings -> a model ready for inference (eval mode, no grad), its tokenizer and where it runs."""
    device = resolve_device(settings.device)
    settings = settings.with_overrides(quantization=resolve_quantization(settings.quantization, device))
    if settings.merge_adapter and settings.quantization == "nf4":
        raise ModelLoadError("NOTIF_MERGE_ADAPTER needs NOTIF_QUANTIZATION=none (NF4 weights cannot absorb LoRA)")
    dtype = resolve_dtype(settings, device)
    tokenizer = load_tokenizer(settings.model)
    model = load_base_model(settings, device, dtype)
    name = settings.model
    if settings.adapter:
        model = attach_adapter(model, settings.adapter, merge=settings.merge_adapter)
        name = f"{settings.model}+{settings.adapter}"
    model.eval()
    model.requires_grad_(False)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    return LoadedModel(model, tokenizer, device, name, settings.quantization, dtype,
                       runtime_info(device, settings.quantization, dtype))


def attach_adapter(model: Any, adapter: str, *, merge: bool = False) -> Any:
    """Load a LoRA adapter trained under this contract onto `model`; merge it into the weights if asked."""
    from peft import PeftModel

    check_adapter_contract(adapter)
    try:
        model = PeftModel.from_pretrained(model, adapter, is_trainable=False)
    except Exception as exc:
        if "size mismatch" in str(exc) or "not found in the base model" in str(exc):
            raise ModelLoadError(
                f"adapter {adapter} was trained for another base model than the one loaded: {_first_line(exc)}"
            ) from exc
        raise ModelLoadError(_explain(adapter, "adapter", exc)) from exc
    return model.merge_and_unload() if merge else model


def write_adapter_contract(folder: Path) -> Path:
    """Write notif_contract.json into an adapter directory (the final adapter and every checkpoint-N of
    notif-train): the fingerprint ``check_adapter_contract`` vouches for an adapter by."""
    path = folder / CONTRACT_FILE
    path.write_text(json.dumps(contract_fingerprint(), indent=2) + "\n")
    return path


def check_adapter_contract(adapter: str) -> dict[str, str]:
    """Read the adapter's notif_contract.json and refuse an adapter trained under another contract."""
    path = Path(adapter) / CONTRACT_FILE
    if not path.is_file() and not Path(adapter).exists():
        path = _download_contract(adapter)
    if not path.is_file():
        raise ModelLoadError(
            f"{adapter} has no {CONTRACT_FILE}: it was not built by notif-train, so its prompt format is unknown"
        )
    recorded = json.loads(path.read_text())
    expected = contract_fingerprint()
    if not compatible_contract(recorded.get("contract_version")):
        raise ModelLoadError(
            f"adapter {adapter} was trained under contract {recorded.get('contract_version')!r}; "
            f"this worker speaks {CONTRACT_VERSION!r}. Retrain it or run a matching worker version."
        )
    if recorded.get("system_prompt_sha256") != expected["system_prompt_sha256"]:
        log.warning("adapter %s was trained with a different system prompt text", adapter)
    return dict(recorded)


def _download_contract(adapter: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(adapter, CONTRACT_FILE))
    except Exception as exc:
        raise ModelLoadError(_explain(adapter, "adapter", exc)) from exc


def _explain(name: str, what: str, exc: Exception) -> str:
    text = str(exc)
    looks_local = name.startswith((".", "/", "~")) or Path(name).exists()
    if looks_local and not Path(name).expanduser().exists():
        return f"{what} path {name} does not exist"
    if "connect" in text.lower() or "offline" in text.lower() or "resolve" in text.lower():
        return (f"could not fetch {what} {name!r} from the Hugging Face hub ({_first_line(exc)}); "
                "check the network or point to a local directory")
    return f"could not load {what} {name!r}: {type(exc).__name__}: {_first_line(exc)}"


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]

"""Random-weight Qwen3 models built from a config, for where the Hugging Face hub is unreachable.

Tests, benchmarks and the demo run without the hub. The tokenizer is the real one
(worker/dev/tokenizer.py: token counts are real); weights are random, which is all a speed measurement or a
plumbing test needs. Nothing here is written inside the repository: everything goes to a cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from worker.dev.tokenizer import cache_root, fetch_qwen3_tokenizer

# Qwen3-0.6B's published architecture; speed does not depend on the weight values.
QWEN3_0_6B: dict[str, Any] = {
    "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "tie_word_embeddings": True,
    "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 40960,
}
# Small enough for a CPU test, same vocabulary and attention layout (GQA, head_dim) as the real one.
QWEN3_TINY: dict[str, Any] = {
    **QWEN3_0_6B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
}
SIZES = {"tiny": QWEN3_TINY, "0.6b": QWEN3_0_6B}
TINY_INIT_STD = 0.3


def build_random_qwen3(
    out_dir: Path, *, size: Literal["tiny", "0.6b"] = "tiny", seed: int = 0, tokenizer_dir: Path | None = None
) -> Path:
    """Save a random-weight Qwen3 (config, weights, real tokenizer) that from_pretrained loads like the hub's."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    marker = out_dir / "notif_random_model.json"
    spec = {"size": size, "seed": seed, "init": TINY_INIT_STD if size == "tiny" else "default"}
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return out_dir
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir or fetch_qwen3_tokenizer()))
    torch.manual_seed(seed)
    model: Any = Qwen3ForCausalLM(Qwen3Config(**SIZES[size]))
    if size == "tiny":
        # The default init (std 0.02) gives every input the same answer; a wider spread makes the answer
        # depend on the input, with margins far above float noise: a hard case for the decoding tests.
        with torch.no_grad():
            for param in model.parameters():
                if param.dim() == 2:
                    param.normal_(0.0, TINY_INIT_STD)
    else:
        model.to(torch.bfloat16)  # half the bytes on disk; the real checkpoint is bf16 too
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    marker.write_text(json.dumps(spec))
    return out_dir


def cached_random_qwen3(size: Literal["tiny", "0.6b"] = "tiny") -> Path:
    """The seed-0 random Qwen3 of ``size`` in the shared cache (built on first use)."""
    return build_random_qwen3(cache_root() / "models" / f"qwen3-{size}-seed0", size=size)

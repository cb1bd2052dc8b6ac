"""The house rules of worker/ and trainer/, read from the source with ast: layering, sizes, no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("worker", "trainer")
ML_LIBRARIES = {"torch", "transformers", "peft", "bitsandbytes", "accelerate"}
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300
MAX_TOP_LEVEL_MODULES = 6


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def imports(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` names, at any depth (lazy imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def internal_imports(path: Path, known: dict[str, Path]) -> set[str]:
    return {name for name in imports(path) if name in known}


def top(name: str) -> str:
    return name.split(".")[0]


def in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_stream_never_imports_the_ml_libraries_or_the_model() -> None:
    known = modules()
    for name, path in known.items():
        if in_package(name, "worker.stream"):
            found = imports(path)
            assert not {top(i) for i in found} & ML_LIBRARIES, f"{name} imports an ML library"
            assert not [i for i in found if in_package(i, "worker.model")], f"{name} imports worker.model"


STREAM_ROOMS = {"kafka", "flow", "lifecycle"}
# Which rooms of the stream each room may import: the edge knows no flow, the flow no lifecycle.
ROOM_MAY_IMPORT = {"kafka": set(), "flow": {"kafka"}, "lifecycle": {"kafka", "flow"}}
MAX_STREAM_MODULE_LINES = 300


def room(name: str) -> str | None:
    parts = name.split(".")
    return parts[2] if len(parts) > 3 and parts[:2] == ["worker", "stream"] else None


def test_the_stream_is_three_rooms_and_the_supervisor() -> None:
    stream = ROOT / "worker" / "stream"
    assert {p.name for p in stream.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == STREAM_ROOMS
    assert {p.name for p in stream.glob("*.py")} == {"__init__.py", "pipeline.py", "watcher.py"}


def test_each_room_of_the_stream_imports_only_the_rooms_below_it() -> None:
    known = modules()
    for name, path in known.items():
        here = room(name)
        if here is None:
            continue
        for target in internal_imports(path, known):
            if in_package(target, "worker.stream"):
                there = room(target)
                assert there is not None, f"{name} imports the supervisor's {target}"
                assert there == here or there in ROOM_MAY_IMPORT[here], f"{name} ({here}) imports {target} ({there})"


def test_only_the_kafka_edge_talks_to_the_client() -> None:
    """Outside stream/kafka/, the stream may name aiokafka's record types (aiokafka.structs), nothing else."""
    for name, path in modules().items():
        if in_package(name, "worker.stream") and room(name) != "kafka":
            found = {i for i in imports(path) if top(i) == "aiokafka"}
            assert all(in_package(i, "aiokafka.structs") for i in found), f"{name} imports {found}"


def test_stream_modules_stay_small() -> None:
    for name, path in modules().items():
        if in_package(name, "worker.stream"):
            assert path.read_text().count("\n") <= MAX_STREAM_MODULE_LINES, name


def test_the_worker_never_imports_the_trainer() -> None:
    for name, path in modules().items():
        if in_package(name, "worker"):
            assert not [i for i in imports(path) if top(i) == "trainer"], f"{name} imports the trainer"


def test_the_envelopes_know_neither_kafka_nor_the_model() -> None:
    for name, path in modules().items():
        if in_package(name, "worker.envelopes"):
            found = imports(path)
            assert not {top(i) for i in found} & (ML_LIBRARIES | {"aiokafka"}), name
            assert all(in_package(i, "worker.envelopes") or in_package(i, "worker.contract")
                       for i in found if top(i) == "worker"), name


def test_the_model_never_imports_kafka() -> None:
    for name, path in modules().items():
        if in_package(name, "worker.model"):
            assert "aiokafka" not in {top(i) for i in imports(path)}, f"{name} imports aiokafka"


@pytest.mark.parametrize("name", ["worker.contract", "worker.protocol", "worker.settings"])
def test_the_foundations_import_neither_side(name: str) -> None:
    found = {top(i) for i in imports(modules()[name])}
    assert not found & (ML_LIBRARIES | {"aiokafka"}), f"{name} imports {found & (ML_LIBRARIES | {'aiokafka'})}"
    internal = {i for i in imports(modules()[name]) if top(i) == "worker"}
    # settings parses NOTIF_INPUT_FIELDS with the envelopes' own parser (pure: no Kafka, no model)
    allowed = {"worker.contract", "worker.contract.Notification", "worker.contract.ClassificationResult",
               "worker.envelopes.mapping", "worker.envelopes.mapping.FieldMapping"}
    assert internal <= allowed, internal - allowed


def test_no_import_cycles() -> None:
    known = modules()
    graph = {name: {i for i in internal_imports(path, known) if i != name} for name, path in known.items()}
    state: dict[str, int] = {}  # 1 on the stack, 2 finished

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if in_package(node, nxt):
                continue  # a module importing its own package's __init__ is not a cycle of modules
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(nxt):], nxt]))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_sizes() -> None:
    for name, path in modules().items():
        source = path.read_text()
        assert source.count("\n") <= MAX_MODULE_LINES, f"{name}: {source.count(chr(10))} lines"
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                assert length <= MAX_CLASS_LINES, f"{name}.{node.name}: {length} lines"


def test_worker_top_level_is_small_and_every_module_says_its_job() -> None:
    top_level = sorted(p.name for p in (ROOT / "worker").glob("*.py"))
    assert len(top_level) <= MAX_TOP_LEVEL_MODULES, top_level
    for name, path in modules().items():
        docstring = ast.get_docstring(ast.parse(path.read_text()))
        assert docstring, f"{name} has no opening sentence"

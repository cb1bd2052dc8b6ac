"""docker-compose.yml, its CPU override and the Dockerfile, checked by reading them (no Docker engine)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.commands.cli import build_parser
from worker.commands.stopping import hard_bound_s
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_CPU = ROOT / "docker-compose.cpu.yml"
DOCKERFILE = ROOT / "Dockerfile"
DEFAULTS = Settings.model_validate({})  # field defaults, whatever NOTIF_* the shell has
SETTING_VARIABLES = {f"NOTIF_{name.upper()}" for name in Settings.model_fields}
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


class _ComposeLoader(yaml.SafeLoader):
    """SafeLoader plus Compose's merge tags (`!reset`, `!override`), kept as a marker."""


class Reset:
    def __init__(self, value: Any) -> None:
        self.value = value


def _reset(loader: yaml.SafeLoader, node: yaml.Node) -> Reset:
    if isinstance(node, yaml.MappingNode):
        return Reset(loader.construct_mapping(node))
    if isinstance(node, yaml.SequenceNode):
        return Reset(loader.construct_sequence(node))
    return Reset(loader.construct_scalar(node))  # type: ignore[arg-type]


_ComposeLoader.add_constructor("!reset", _reset)
_ComposeLoader.add_constructor("!override", _reset)


def load_compose(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_ComposeLoader)


def merge(base: Any, override: Any) -> Any:
    """Compose's merge of an override file, for the parts this project uses (mappings, !reset)."""
    if isinstance(override, Reset):
        return override.value
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base[key], value) if key in base else value
            if isinstance(merged[key], Reset):
                merged[key] = merged[key].value
        return merged
    return override


def interpolation_default(value: str) -> str:
    """`${VAR:-default}` -> default (what the stack runs with when VAR is unset)."""
    match = INTERPOLATION.fullmatch(value)
    assert match and match.group("default") is not None, f"{value!r} is not ${{VAR:-default}}"
    return match.group("default")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(COMPOSE)


@pytest.fixture(scope="module")
def compose_cpu(compose: dict[str, Any]) -> dict[str, Any]:
    return merge(compose, load_compose(COMPOSE_CPU))


@pytest.fixture(scope="module", params=["gpu", "cpu"])
def stack(
    request: pytest.FixtureRequest, compose: dict[str, Any], compose_cpu: dict[str, Any]
) -> dict[str, Any]:
    return compose if request.param == "gpu" else compose_cpu


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def _has_healthcheck(service: dict[str, Any]) -> bool:
    check = service.get("healthcheck")
    if check is not None:
        return not check.get("disable", False)
    # Services built from our Dockerfile inherit its HEALTHCHECK.
    return "build" in service and "HEALTHCHECK" in DOCKERFILE.read_text()


def test_expected_services_exist(compose: dict[str, Any]) -> None:
    expected = {"redpanda", "console", "topics", "worker", "demo-producer", "prometheus", "grafana"}
    assert expected <= set(compose["services"])


def test_every_service_has_a_pinned_image_or_a_build(stack: dict[str, Any]) -> None:
    for name, service in stack["services"].items():
        assert "image" in service or "build" in service, name
        image = service.get("image", "")
        if "build" not in service:
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag ({image})"


def test_dependencies_exist_and_their_conditions_hold(stack: dict[str, Any]) -> None:
    services = stack["services"]
    for name, service in services.items():
        for dep, condition in _depends_on(service).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert condition in {"service_started", "service_healthy", "service_completed_successfully"}
            if condition == "service_healthy":
                assert _has_healthcheck(services[dep]), (
                    f"{name} waits for {dep} to be healthy; it has no check"
                )
            if condition == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"one-shot {dep} must not restart"


def test_named_volumes_are_declared_and_used(stack: dict[str, Any]) -> None:
    declared = set(stack.get("volumes") or {})
    used: set[str] = set()
    for name, service in stack["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert used == declared, f"declared but unused: {declared - used}"


def test_published_host_ports_are_unique(stack: dict[str, Any]) -> None:
    seen: dict[str, str] = {}
    for name, service in stack["services"].items():
        for port in service.get("ports", []):
            host = str(port).split(":")[0]
            assert host not in seen, f"host port {host} published by {seen.get(host)} and {name}"
            seen[host] = name
    assert {"19092", "8080", "9108", "9090", "3000"} <= set(seen)


def test_worker_publishes_its_metrics_port(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    port = int(worker["environment"]["NOTIF_METRICS_PORT"])
    assert port == DEFAULTS.metrics_port
    assert f"{port}:{port}" in worker["ports"]


def test_every_notif_variable_is_a_worker_setting() -> None:
    for path in (COMPOSE, COMPOSE_CPU, ROOT / "deploy/compose/create-topics.sh", DOCKERFILE):
        used = set(re.findall(r"NOTIF_[A-Z0-9_]+", path.read_text()))
        assert used <= SETTING_VARIABLES, f"{path.name}: unknown {sorted(used - SETTING_VARIABLES)}"


def test_worker_receives_every_setting(stack: dict[str, Any]) -> None:
    env = stack["services"]["worker"]["environment"]
    assert set(env) >= SETTING_VARIABLES, f"not passed through: {sorted(SETTING_VARIABLES - set(env))}"
    fixed = {key: value for key, value in env.items() if key.startswith("NOTIF_") and value is not None}
    # Values the stack sets must be valid settings (a typo'd enum fails here, not at container start).
    resolved = {
        key.removeprefix("NOTIF_").lower(): interpolation_default(value) if "${" in str(value) else value
        for key, value in fixed.items()
    }
    Settings.model_validate(resolved)


def test_worker_reaches_the_broker_on_the_internal_listener(compose: dict[str, Any]) -> None:
    bootstrap = compose["services"]["worker"]["environment"]["NOTIF_KAFKA_BOOTSTRAP_SERVERS"]
    command = " ".join(compose["services"]["redpanda"]["command"])
    host, port = bootstrap.split(":")
    assert host == "redpanda"
    assert f"internal://{host}:{port}" in command
    assert compose["services"]["demo-producer"]["environment"]["NOTIF_KAFKA_BOOTSTRAP_SERVERS"] == bootstrap
    assert compose["services"]["topics"]["environment"]["BROKERS"] == bootstrap


def test_topics_created_match_the_worker_defaults(compose: dict[str, Any]) -> None:
    env = compose["services"]["topics"]["environment"]
    assert interpolation_default(env["NOTIF_INPUT_TOPIC"]) == DEFAULTS.input_topic
    assert interpolation_default(env["NOTIF_OUTPUT_TOPIC"]) == DEFAULTS.output_topic
    assert interpolation_default(env["NOTIF_DLQ_TOPIC"]) == DEFAULTS.dlq_topic
    assert int(interpolation_default(env["INPUT_PARTITIONS"])) >= 1
    producer_topic = compose["services"]["demo-producer"]["environment"]["NOTIF_INPUT_TOPIC"]
    assert interpolation_default(producer_topic) == DEFAULTS.input_topic
    script = (ROOT / "deploy/compose/create-topics.sh").read_text()
    for variable in ("NOTIF_INPUT_TOPIC", "NOTIF_OUTPUT_TOPIC", "NOTIF_DLQ_TOPIC"):
        assert re.search(rf'^create "\${variable}"', script, re.M), f"the script does not create {variable}"


def test_topics_script_is_mounted_where_the_entrypoint_runs_it(compose: dict[str, Any]) -> None:
    topics = compose["services"]["topics"]
    target = topics["entrypoint"][-1]
    assert any(v.split(":")[1] == target for v in topics["volumes"])


def test_gpu_stack_reserves_a_gpu_and_cpu_override_drops_it(
    compose: dict[str, Any], compose_cpu: dict[str, Any]
) -> None:
    devices = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    cpu_worker = compose_cpu["services"]["worker"]
    assert not cpu_worker.get("deploy")
    assert cpu_worker["environment"]["NOTIF_DEVICE"] == "cpu"
    assert cpu_worker["build"]["args"]["VARIANT"] == "cpu"


def test_worker_and_producer_share_one_image(stack: dict[str, Any]) -> None:
    worker, producer = stack["services"]["worker"], stack["services"]["demo-producer"]
    assert worker["image"] == producer["image"]
    assert worker["build"] == producer["build"]
    assert worker["build"]["args"]["VARIANT"] in re.findall(
        r"FROM \S+ AS runtime-(\w+)", DOCKERFILE.read_text()
    )


def test_worker_stop_grace_exceeds_the_stops_hard_bound(compose: dict[str, Any]) -> None:
    """Docker's SIGKILL comes after the worker's own hard deadline (stacks logged, exit 3), never before."""
    grace = compose["services"]["worker"]["stop_grace_period"]
    assert grace.endswith("s")
    assert float(grace[:-1]) > hard_bound_s(DEFAULTS.shutdown_timeout_s)


def test_prometheus_scrapes_the_worker_and_loads_the_rules(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "notif-worker")
    assert job["static_configs"][0]["targets"] == [f"worker:{DEFAULTS.metrics_port}"]
    for rule_file in config["rule_files"]:
        assert (ROOT / "deploy/prometheus" / rule_file).is_file()
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in mounts


def test_grafana_provisioning_is_mounted_and_points_at_the_dashboards(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":") for v in grafana["volumes"] if v.startswith("./"))
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    providers = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/notif-triage.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    assert mounts["./deploy/grafana/dashboards"] == path
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "deploy/grafana/dashboards" / Path(home).relative_to(path)).is_file()
    datasources = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    url = datasources["datasources"][0]["url"]
    assert url == "http://prometheus:9090" and "9090:9090" in compose["services"]["prometheus"]["ports"]


def test_demo_producer_runs_a_registered_subcommand(compose: dict[str, Any]) -> None:
    command = compose["services"]["demo-producer"]["command"]
    rate = interpolation_default(command[command.index("--rate") + 1])
    assert float(rate) > 0
    args = build_parser().parse_args([command[0], "--rate", rate])
    assert args.command == command[0]


def test_dockerfile_builds_the_documented_image() -> None:
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 3, "multi-stage build"
    assert re.search(r"^ARG VARIANT=cuda$", text, re.M)
    assert re.search(r"^ARG CUDA_BASE=nvidia/cuda:\S+-runtime-", text, re.M)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and not user[-1].startswith(("root", "0")), "runs as a non-root user"
    assert re.search(r"^ENTRYPOINT \[\"notif-worker\"\]$", text, re.M)
    assert re.search(r"^CMD \[\"serve\"\]$", text, re.M)
    assert re.search(rf"^EXPOSE {DEFAULTS.metrics_port}$", text, re.M)
    health = text[text.index("HEALTHCHECK") :].split("\n\n")[0]
    assert "/healthz" in health and f"'NOTIF_METRICS_PORT', '{DEFAULTS.metrics_port}'" in health
    hf_home = re.search(r"HF_HOME=(\S+)", text)
    volume = re.search(r'^VOLUME \["([^"]+)"\]', text, re.M)
    assert hf_home and volume and hf_home.group(1).startswith(volume.group(1) + "/")


def test_dependency_layers_come_before_the_source() -> None:
    text = DOCKERFILE.read_text()
    assert text.index("COPY pyproject.toml") < text.index("pip install -c constraints.txt -r") < text.index("COPY . .")


def dockerfile_commands() -> list[str]:
    """The Dockerfile's instructions with line continuations joined."""
    return [line.strip() for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_every_pip_install_uses_the_tested_versions() -> None:
    installs = [part for line in dockerfile_commands() if line.startswith("RUN")
                for part in re.split(r"&&|;", line) if "pip install" in part]
    assert len(installs) >= 4
    for install in installs:
        assert "-c constraints.txt" in install, install
    assert "COPY constraints.txt" in DOCKERFILE.read_text()


def test_torch_from_its_own_index_comes_without_dependencies() -> None:
    installs = [part for line in dockerfile_commands() for part in re.split(r"&&|;", line) if "pip install" in part]
    from_index = [install for install in installs if "--index-url" in install]
    assert from_index and all("--no-deps" in install for install in from_index), from_index
    assert "https://download.pytorch.org/whl/cpu" in DOCKERFILE.read_text()


def test_each_image_names_its_device() -> None:
    text = DOCKERFILE.read_text()
    for stage, device in (("runtime-cuda", "cuda"), ("runtime-cpu", "cpu")):
        assert re.search(rf"^FROM \S+ AS {stage}\nENV NOTIF_DEVICE={device}$", text, re.M), stage


def test_gpu_stack_fails_loudly_without_a_gpu(compose: dict[str, Any]) -> None:
    device = compose["services"]["worker"]["environment"]["NOTIF_DEVICE"]
    assert interpolation_default(device) == "cuda"


def test_cuda_base_and_its_driver_requirement_are_documented() -> None:
    base = re.search(r"^ARG CUDA_BASE=nvidia/cuda:(\d+)\.(\d+)\.\d+-runtime-", DOCKERFILE.read_text(), re.M)
    assert base
    major, minor = base.groups()
    driver = {"12": "R560", "13": "R580"}[major]
    for doc in (ROOT / "docs/DEPLOY.md", ROOT / "README.md"):
        text = doc.read_text()
        assert f"CUDA {major}.{minor}" in text and driver in text, f"{doc.name} states the driver the image needs"


def test_dockerignore_keeps_what_the_build_needs() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert lines[0] == "**", "allow-list: everything is excluded unless named"
    for needed in ("constraints.txt", "pyproject.toml", "README.md", "LICENSE", "worker/", "trainer/"):
        assert f"!{needed}" in lines
    assert "**/*.safetensors" in lines
    for included in (line[1:] for line in lines if line.startswith("!")):
        assert (ROOT / included).exists(), f".dockerignore re-includes {included}, which does not exist"

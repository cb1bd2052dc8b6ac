"""Every deploy file through the real tool that would reject it: docker compose, kubectl kustomize +
kubernetes-validate + the CRD schemas, hadolint, shellcheck, and Grafana's dashboard schema."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.deploy.tools import ROOT, docker_compose, executable, kubectl, run, validate_custom_resources

K8S = ROOT / "deploy/k8s"
OVERLAYS = ROOT / "deploy/overlays"
COMPONENTS = sorted(path.parent for path in (K8S / "components").glob("*/kustomization.yaml"))
# Applied in this order when all are on: private-ca and client-certificate patch the TriggerAuthentication of sasl.
COMPONENT_ORDER = ["sasl", "private-ca", "client-certificate", "kube-prometheus-stack"]
CUSTOM_GROUPS = ("keda.sh/", "monitoring.coreos.com/")
COMPOSE_SETS = {"gpu": ["docker-compose.yml"], "cpu": ["docker-compose.yml", "docker-compose.cpu.yml"]}
DASHBOARD = ROOT / "deploy/grafana/dashboards/notif-triage.json"


# --- docker compose -------------------------------------------------------------------------------------
@pytest.mark.parametrize("files", COMPOSE_SETS.values(), ids=COMPOSE_SETS.keys())
def test_docker_compose_config_accepts_the_stack(files: list[str]) -> None:
    args = [arg for name in files for arg in ("-f", name)]
    run([docker_compose(), *args, "config", "-q"])


def test_docker_compose_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yml"
    for text in ("services:\n  worker:\n    image: x:1\n    depends_on: [nowhere]\n",
                 "services:\n  worker:\n    imagez: x:1\n"):
        broken.write_text(text)
        assert run([docker_compose(), "-f", str(broken), "config", "-q"], check=False).returncode != 0, text


# --- kubernetes -------------------------------------------------------------------------------------------
def overlay_with(tmp_path: Path, components: list[str]) -> Path:
    """A throw-away overlay of the base with these components (kustomize wants relative paths)."""
    folder = tmp_path / f"overlay-{'-'.join(components)}"
    folder.mkdir()
    base = os.path.relpath(K8S, folder)
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                     "resources": [base], "components": [f"{base}/components/{name}" for name in components]}
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return folder


def builds(tmp_path: Path) -> dict[str, Path]:
    """Every kustomization to build: the base, the example overlay, each component alone and all together."""
    targets = {"base": K8S, "overlays/example": OVERLAYS / "example"}
    for component in COMPONENTS:
        targets[f"components/{component.name}"] = overlay_with(tmp_path, [component.name])
    targets["components/all"] = overlay_with(tmp_path, COMPONENT_ORDER)
    return targets


def kustomize(folder: Path) -> list[dict[str, Any]]:
    out = run([kubectl(), "kustomize", str(folder)]).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_component_order_lists_every_component() -> None:
    assert sorted(COMPONENT_ORDER) == sorted(component.name for component in COMPONENTS)


def test_every_kustomization_builds_and_validates(tmp_path: Path) -> None:
    for name, folder in builds(tmp_path).items():
        objects = kustomize(folder)
        assert objects, name
        core = [doc for doc in objects if not doc["apiVersion"].startswith(CUSTOM_GROUPS)]
        custom = [doc for doc in objects if doc["apiVersion"].startswith(CUSTOM_GROUPS)]
        rendered = tmp_path / f"{name.replace('/', '_')}.yaml"
        rendered.write_text(yaml.safe_dump_all(core))
        out = run([executable("kubernetes-validate"), "--strict", str(rendered)]).stdout
        passed = out.count(" passed for resource ")
        assert passed == len(core), f"{name}: kubernetes-validate passed {passed} of {len(core)} objects:\n{out}"
        failures = [r for r in validate_custom_resources(custom) if r["error"]]
        assert not failures, f"{name}: {failures}"
        assert {doc["kind"] for doc in custom} >= {"ScaledObject", "ServiceMonitor", "PrometheusRule"}, name


def test_validators_reject_broken_objects(tmp_path: Path) -> None:
    deployment = next(doc for doc in kustomize(K8S) if doc["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "Sometimes"
    deployment["spec"]["replicaz"] = 1
    rendered = tmp_path / "broken.yaml"
    rendered.write_text(yaml.safe_dump(deployment))
    result = run([executable("kubernetes-validate"), "--strict", str(rendered)], check=False)
    assert result.returncode != 0 and "replicaz" in result.stdout + result.stderr
    scaled = next(doc for doc in kustomize(K8S) if doc["kind"] == "ScaledObject")
    scaled["spec"]["minReplicaCount"] = "one"
    unknown = {"apiVersion": "keda.sh/v1alpha1", "kind": "NoSuchKind", "metadata": {"name": "x"}}
    errors = [r["error"] for r in validate_custom_resources([scaled, unknown])]
    assert errors[0] and "minReplicaCount" in errors[0]
    assert errors[1], "a kind without a schema is an error, not a pass"


def test_sasl_gives_keda_its_tls_choice_from_the_secret(tmp_path: Path) -> None:
    objects = kustomize(overlay_with(tmp_path, ["sasl"]))
    trigger = next(doc for doc in objects if doc["kind"] == "ScaledObject")["spec"]["triggers"][0]
    assert "tls" not in trigger["metadata"], "a fixed tls would break SASL_PLAINTEXT clusters"
    auth = next(doc for doc in objects if doc["kind"] == "TriggerAuthentication")
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    refs = {ref["parameter"]: (ref["name"], ref["key"]) for ref in auth["spec"]["secretTargetRef"]}
    example = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    assert set(refs) == {"sasl", "username", "password", "tls"}
    for name, key in refs.values():
        assert name == example["metadata"]["name"] and key in example["stringData"]


def test_private_ca_reaches_the_worker_and_keda(tmp_path: Path) -> None:
    objects = kustomize(overlay_with(tmp_path, ["sasl", "private-ca"]))
    pod = next(doc for doc in objects if doc["kind"] == "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    cafile = next(env["value"] for env in container["env"] if env["name"] == "NOTIF_SSL_CAFILE")
    mount = next(m for m in container["volumeMounts"] if cafile.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    secret, key = volume["secret"]["secretName"], volume["secret"]["items"][0]
    assert Path(cafile).name == key["path"]
    auth = next(doc for doc in objects if doc["kind"] == "TriggerAuthentication")
    assert {"parameter": "ca", "name": secret, "key": key["key"]} in auth["spec"]["secretTargetRef"]
    doctor = pod["initContainers"][0]  # it connects to the same broker first: without the CA it blocks the pod
    assert {"name": "NOTIF_SSL_CAFILE", "value": cafile} in doctor["env"]
    assert mount in doctor["volumeMounts"]


def test_a_client_certificate_reaches_the_worker_its_doctor_and_keda(tmp_path: Path) -> None:
    objects = kustomize(overlay_with(tmp_path, ["sasl", "private-ca", "client-certificate"]))
    pod = next(doc for doc in objects if doc["kind"] == "Deployment")["spec"]["template"]["spec"]
    auth = next(doc for doc in objects if doc["kind"] == "TriggerAuthentication")
    refs = {ref["parameter"]: (ref["name"], ref["key"]) for ref in auth["spec"]["secretTargetRef"]}
    for container in (pod["containers"][0], pod["initContainers"][0]):  # the doctor connects first
        env = {item["name"]: item.get("value") for item in container["env"]}
        for setting, keda in (("NOTIF_SSL_CERTFILE", "cert"), ("NOTIF_SSL_KEYFILE", "key")):
            path = env[setting]
            mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
            volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
            assert refs[keda] == (volume["secret"]["secretName"], Path(path).name)  # tls.crt, tls.key of the Secret
        assert "NOTIF_SSL_CAFILE" in env  # private-ca's patch is kept beside it


def test_release_label_reaches_only_the_monitoring_objects(tmp_path: Path) -> None:
    objects = kustomize(overlay_with(tmp_path, ["kube-prometheus-stack"]))
    labelled = {doc["kind"] for doc in objects if "release" in doc["metadata"].get("labels", {})}
    assert labelled == {"ServiceMonitor", "PrometheusRule"}


def test_example_overlay_sets_the_image_with_kubectl_alone() -> None:
    objects = kustomize(OVERLAYS / "example")
    pod = next(doc for doc in objects if doc["kind"] == "Deployment")["spec"]["template"]["spec"]
    overlay = yaml.safe_load((OVERLAYS / "example/kustomization.yaml").read_text())
    wanted = overlay["images"][0]
    for container in pod["initContainers"] + pod["containers"]:  # the doctor runs the same image
        assert container["image"] == f"{wanted['newName']}:{wanted['newTag']}"


# --- Dockerfile and shell scripts -------------------------------------------------------------------------
def test_hadolint_accepts_the_dockerfile() -> None:
    run([executable("hadolint"), "--failure-threshold", "info", str(ROOT / "Dockerfile")])


def shell_scripts() -> list[Path]:
    """Every tracked shell script: *.sh, and files whose first line names sh or bash."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    scripts = []
    for name in tracked.decode().split("\0"):
        path = ROOT / name
        if not name or not path.is_file():
            continue
        if name.endswith(".sh"):
            scripts.append(path)
            continue
        with path.open("rb") as handle:
            first = handle.readline(200)
        if first.startswith(b"#!") and (first.rstrip().endswith((b"/sh", b"/bash", b" sh", b" bash"))):
            scripts.append(path)
    return scripts


def test_shellcheck_accepts_every_shell_script() -> None:
    scripts = shell_scripts()
    assert ROOT / "scripts/test.sh" in scripts and ROOT / ".ci/run" in scripts
    run([executable("shellcheck"), "--external-sources", *map(str, scripts)])


# --- Grafana ----------------------------------------------------------------------------------------------
def schema_round_trip(dashboard: dict[str, Any]) -> list[str]:
    """Load into Grafana's dashboard types and back; what did not survive is not in Grafana's schema."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard

    register_default_plugins()
    loaded = json.loads(json.dumps(Dashboard.from_json(dashboard), cls=JSONEncoder))
    return differences(dashboard, loaded)


def differences(written: Any, loaded: Any, path: str = "") -> list[str]:
    if isinstance(written, dict) and isinstance(loaded, dict):
        found = []
        for key, value in written.items():
            if key in loaded:
                found.extend(differences(value, loaded[key], f"{path}/{key}"))
            else:
                found.append(f"{path}/{key}: not in the schema")
        return found
    if isinstance(written, list) and isinstance(loaded, list) and len(written) == len(loaded):
        return [diff for index, (a, b) in enumerate(zip(written, loaded, strict=True))
                for diff in differences(a, b, f"{path}[{index}]")]
    return [] if written == loaded else [f"{path}: {written!r} loads as {loaded!r}"]


def test_dashboard_loads_against_grafanas_schema() -> None:
    assert schema_round_trip(json.loads(DASHBOARD.read_text())) == []


def test_schema_check_finds_unknown_and_mistyped_fields() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    dashboard["panels"][0]["gridPoss"] = dashboard["panels"][0]["gridPos"]
    dashboard["refresh_rate"] = "5s"
    found = schema_round_trip(dashboard)
    assert any("gridPoss" in line for line in found) and any("refresh_rate" in line for line in found)

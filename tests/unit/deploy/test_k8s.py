"""deploy/k8s (kustomize): manifests are well formed and agree with each other and the worker's settings."""

from __future__ import annotations

import math
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.commands.stopping import hard_bound_s
from worker.settings import Settings

K8S = Path(__file__).resolve().parents[3] / "deploy/k8s"
SETTING_VARIABLES = {f"NOTIF_{name.upper()}" for name in Settings.model_fields}
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # RFC 1123 label


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    return load(K8S / "kustomization.yaml")[0]


@pytest.fixture(scope="module")
def resources(kustomization: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """kind -> the one object of that kind listed in the kustomization."""
    by_kind: dict[str, dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for doc in load(K8S / name):
            assert doc["kind"] not in by_kind, f"two {doc['kind']} objects"
            by_kind[doc["kind"]] = doc
    return by_kind


@pytest.fixture(scope="module")
def config(resources: dict[str, dict[str, Any]]) -> dict[str, str]:
    return resources["ConfigMap"]["data"]


@pytest.fixture(scope="module")
def settings(config: dict[str, str]) -> Settings:
    """The worker's settings as the pod resolves them (ConfigMap over defaults)."""
    return Settings.model_validate(
        {key.removeprefix("NOTIF_").lower(): value for key, value in config.items()}
    )


@pytest.fixture(scope="module")
def pod(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return resources["Deployment"]["spec"]["template"]


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    containers = pod["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def test_every_object_is_well_formed(resources: dict[str, dict[str, Any]]) -> None:
    expected = {
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "ServiceMonitor",
        "PrometheusRule",
        "PodDisruptionBudget",
        "ScaledObject",
    }
    assert expected <= set(resources)
    for kind, doc in resources.items():
        assert re.fullmatch(r"([a-z0-9.-]+/)?v\d+((alpha|beta)\d+)?", doc["apiVersion"]), kind
        assert NAME.match(doc["metadata"]["name"]), kind
        assert "namespace" not in doc["metadata"], f"{kind}: the kustomization sets the namespace"


def test_kustomization_files_exist(kustomization: dict[str, Any]) -> None:
    assert kustomization["kind"] == "Kustomization"
    for name in kustomization["resources"]:
        assert (K8S / name).is_file(), name
    assert kustomization["namespace"] == load(K8S / "namespace.yaml")[0]["metadata"]["name"]
    for folder in sorted((K8S / "components").iterdir()):
        component = load(folder / "kustomization.yaml")[0]
        assert component["kind"] == "Component", folder.name
        for name in component.get("resources", []):
            assert (folder / name).is_file(), f"{folder.name}: {name}"


def test_configmap_holds_only_valid_worker_settings(config: dict[str, str], settings: Settings) -> None:
    assert set(config) <= SETTING_VARIABLES, f"unknown {set(config) - SETTING_VARIABLES}"
    assert all(isinstance(value, str) for value in config.values()), "ConfigMap values are strings"
    assert settings.device.startswith("cuda")
    assert not {"NOTIF_SASL_PASSWORD", "NOTIF_SASL_USERNAME"} & set(config), (
        "credentials belong in the Secret"
    )


def test_image_is_the_one_kustomize_rewrites(
    kustomization: dict[str, Any], container: dict[str, Any]
) -> None:
    assert container["image"] in {image["name"] for image in kustomization["images"]}
    assert container["args"] == ["serve"]


def test_container_port_and_probes_match_the_settings(container: dict[str, Any], settings: Settings) -> None:
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["metrics"] == settings.metrics_port
    probes = {
        kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["startupProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert ports.get(probe["port"], probe["port"]) == settings.metrics_port


def test_startup_probe_leaves_room_for_a_model_download(container: dict[str, Any]) -> None:
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "room for a first model download"


def test_grace_period_exceeds_the_stops_hard_bound(pod: dict[str, Any], settings: Settings) -> None:
    """The kubelet's SIGKILL comes after the worker's own hard deadline (stacks logged, exit 3), never before."""
    assert pod["spec"]["terminationGracePeriodSeconds"] > hard_bound_s(settings.shutdown_timeout_s)


def test_pod_gets_a_gpu_and_runs_as_non_root(pod: dict[str, Any], container: dict[str, Any]) -> None:
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 1
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    hf_home = next(env["value"] for env in container["env"] if env["name"] == "HF_HOME")
    assert any(hf_home.startswith(path + "/") for path in mounts), "HF_HOME is on a volume"
    volumes = {volume["name"] for volume in pod["spec"]["volumes"]}
    assert {mount["name"] for mount in container["volumeMounts"]} <= volumes


def test_env_comes_from_the_configmap_and_the_sasl_secret(
    resources: dict[str, dict[str, Any]], container: dict[str, Any]
) -> None:
    refs = [source["configMapRef"]["name"] for source in container["envFrom"]]
    assert refs == [resources["ConfigMap"]["metadata"]["name"]]
    from_secret = {
        env["name"]: env["valueFrom"]["secretKeyRef"] for env in container["env"] if "valueFrom" in env
    }
    assert set(from_secret) == {"NOTIF_SASL_USERNAME", "NOTIF_SASL_PASSWORD", "NOTIF_SASL_OAUTHBEARER_CLIENT_ID",
                                "NOTIF_SASL_OAUTHBEARER_CLIENT_SECRET"}
    # OAUTHBEARER's client id and secret are the Secret's username and password, the keys KEDA reads them from
    assert from_secret["NOTIF_SASL_OAUTHBEARER_CLIENT_ID"]["key"] == from_secret["NOTIF_SASL_USERNAME"]["key"]
    assert from_secret["NOTIF_SASL_OAUTHBEARER_CLIENT_SECRET"]["key"] == from_secret["NOTIF_SASL_PASSWORD"]["key"]
    assert set(from_secret) <= SETTING_VARIABLES
    example = load(K8S / "secret.example.yaml")[0]
    for ref in from_secret.values():
        assert ref["name"] == example["metadata"]["name"] and ref["key"] in example["stringData"]
        assert ref["optional"] is True, "PLAINTEXT clusters run without the Secret"


def test_the_doctor_checks_what_the_worker_will_use(pod: dict[str, Any], container: dict[str, Any]) -> None:
    """The init container (docs/DEPLOY.md, "Preflight"): the worker's image, settings, secrets, model volume and
    GPU, so its device and bitsandbytes checks see the device serve gets (Kubernetes hands an init container's
    devices on to the app containers: the pod still needs one GPU)."""
    [doctor] = pod["spec"]["initContainers"]
    assert doctor["image"] == container["image"] and doctor["args"] == ["doctor", "--skip-model"]
    assert doctor["envFrom"] == container["envFrom"]
    assert [env for env in doctor["env"] if env["name"] != "XDG_CACHE_HOME"] == [
        env for env in container["env"] if env["name"] != "XDG_CACHE_HOME"]
    assert doctor["resources"]["limits"]["nvidia.com/gpu"] == container["resources"]["limits"]["nvidia.com/gpu"]
    models = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert all(models.get(m["mountPath"]) == m["name"] for m in doctor["volumeMounts"])


def test_selectors_match_the_pods(resources: dict[str, dict[str, Any]], pod: dict[str, Any]) -> None:
    labels = pod["metadata"]["labels"]
    deployment = resources["Deployment"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    assert selects(resources["Service"]["spec"]["selector"], labels)
    assert selects(resources["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"], labels)
    service_labels = resources["Service"]["metadata"]["labels"]
    assert selects(resources["ServiceMonitor"]["spec"]["selector"]["matchLabels"], service_labels)


def test_service_and_monitor_use_the_metrics_port(
    resources: dict[str, dict[str, Any]], container: dict[str, Any], settings: Settings
) -> None:
    port = resources["Service"]["spec"]["ports"][0]
    assert port["port"] == settings.metrics_port
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    endpoint = resources["ServiceMonitor"]["spec"]["endpoints"][0]
    assert endpoint["port"] == port["name"] and endpoint["path"] == "/metrics"


def test_disruption_budget_never_blocks_a_drain(resources: dict[str, dict[str, Any]]) -> None:
    spec = resources["PodDisruptionBudget"]["spec"]
    assert "minAvailable" not in spec and spec["maxUnavailable"] >= 1


def test_scaled_object_targets_the_deployment(resources: dict[str, dict[str, Any]]) -> None:
    spec = resources["ScaledObject"]["spec"]
    target = spec["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", resources["Deployment"]["metadata"]["name"])
    assert spec["minReplicaCount"] >= 1
    assert spec["maxReplicaCount"] >= spec["minReplicaCount"]
    assert "replicas" not in resources["Deployment"]["spec"], "KEDA owns the replica count"


def test_scaled_object_watches_the_workers_group_and_topic(
    resources: dict[str, dict[str, Any]], config: dict[str, str], kustomization: dict[str, Any]
) -> None:
    trigger = resources["ScaledObject"]["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["allowIdleConsumers"] == "false"
    assert meta["bootstrapServers"] == config["NOTIF_KAFKA_BOOTSTRAP_SERVERS"]
    assert meta["consumerGroup"] == config["NOTIF_GROUP_ID"]
    assert meta["topic"] == config["NOTIF_INPUT_TOPIC"]
    copied = {
        (r["source"]["fieldPath"], r["targets"][0]["fieldPaths"][0].rsplit(".", 1)[1])
        for r in kustomization["replacements"]
    }
    assert copied == {
        ("data.NOTIF_KAFKA_BOOTSTRAP_SERVERS", "bootstrapServers"),
        ("data.NOTIF_GROUP_ID", "consumerGroup"),
        ("data.NOTIF_INPUT_TOPIC", "topic"),
    }


def test_lag_threshold_follows_its_stated_derivation(resources: dict[str, dict[str, Any]]) -> None:
    text = (K8S / "keda-scaledobject.yaml").read_text()
    derivation = re.search(
        r"lagThreshold = floor\((\d+(?:\.\d+)?) msg/s \* (\d+(?:\.\d+)?) s\) = (\d+)", text
    )
    assert derivation, "keda-scaledobject.yaml states how lagThreshold was derived"
    throughput, backlog, result = derivation.groups()
    assert math.floor(float(throughput) * float(backlog)) == int(result)
    lag_threshold = resources["ScaledObject"]["spec"]["triggers"][0]["metadata"]["lagThreshold"]
    assert isinstance(lag_threshold, str) and int(lag_threshold) == int(result)
    assert re.search(rf"REPLICA_THROUGHPUT = {throughput} msg/s", text)


def test_sasl_component_gives_keda_the_workers_secret(container: dict[str, Any]) -> None:
    auth = load(K8S / "components/sasl/keda-triggerauthentication.yaml")[0]
    secret_names = {ref["name"] for ref in auth["spec"]["secretTargetRef"]}
    worker_secret = {
        env["valueFrom"]["secretKeyRef"]["name"] for env in container["env"] if "valueFrom" in env
    }
    assert secret_names == worker_secret
    patch = load(K8S / "components/sasl/kustomization.yaml")[0]["patches"][0]
    assert patch["target"]["kind"] == "ScaledObject"
    ops = yaml.safe_load(patch["patch"])
    ref = {"name": auth["metadata"]["name"]}
    assert {"op": "add", "path": "/spec/triggers/0/authenticationRef", "value": ref} in ops


def doc_table(heading: str, first_column: str) -> dict[str, str]:
    """A two-column table of docs/DEPLOY.md under `heading` whose header starts with `first_column`."""
    text = (K8S.parents[1] / "docs/DEPLOY.md").read_text()
    section = text[text.index(heading):]
    section = section[section.index(f"| {first_column}"):]
    rows: dict[str, str] = {}
    for line in section.splitlines()[2:]:
        if not line.startswith("|"):
            break
        left, right = (cell.strip().strip("`") for cell in line.strip("|").split("|"))
        rows[left] = right
    return rows


def test_docs_map_every_sasl_mechanism_and_protocol_to_keda() -> None:
    mechanisms = doc_table("### Kafka security", "`NOTIF_SASL_MECHANISM`")
    protocols = doc_table("### Kafka security", "`NOTIF_SECURITY_PROTOCOL`")
    sasl_field = Settings.model_fields["sasl_mechanism"].annotation
    assert set(mechanisms) == set(typing.get_args(typing.get_args(sasl_field)[0]))
    assert set(mechanisms.values()) <= {"plaintext", "scram_sha256", "scram_sha512", "oauthbearer", "gssapi"}
    assert protocols == {"SASL_PLAINTEXT": "disable", "SASL_SSL": "enable"}
    example = load(K8S / "secret.example.yaml")[0]["stringData"]
    assert example["sasl"] in mechanisms.values() and example["tls"] in protocols.values()

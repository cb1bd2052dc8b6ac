"""SASL/SCRAM-SHA-512 over TLS on Apache Kafka: users made with Kafka's own admin tool, a certificate made by the
JDK's keytool; the worker serves through it, and a wrong password is a clear start-up error (exit 2), never a
silent retry loop. (OAUTHBEARER: test_oauthbearer.py. Mutual TLS and ACLs: not yet; see the issue's notes.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.kafka_helpers import Topics, notification_messages, produce, read_all, topic_maker
from tests.integration.pipeline_helpers import running_worker, settings_for
from tests.support import subprocess_env
from worker.dev.apache_kafka import ApacheKafka, java

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PASSWORD, STORE_PASSWORD = "worker-secret", "store-secret"


def keytool(*args: str) -> None:
    tool = Path(java()).with_name("keytool")
    run = subprocess.run([str(tool) if tool.exists() else shutil.which("keytool") or "keytool", *args],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApacheKafka, Path]]:
    """A broker with a SASL_SSL listener (SCRAM-SHA-512) beside its PLAINTEXT one; the CA file clients trust."""
    folder = tmp_path_factory.mktemp("tls")
    keystore, ca = folder / "broker.p12", folder / "ca.pem"
    keytool("-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048", "-validity", "2",
            "-dname", "CN=localhost", "-ext", "SAN=IP:127.0.0.1,DNS:localhost", "-keystore", str(keystore),
            "-storetype", "PKCS12", "-storepass", STORE_PASSWORD, "-keypass", STORE_PASSWORD)
    keytool("-exportcert", "-alias", "broker", "-keystore", str(keystore), "-storepass", STORE_PASSWORD, "-rfc",
            "-file", str(ca))
    properties = {
        "ssl.keystore.location": str(keystore), "ssl.keystore.password": STORE_PASSWORD,
        "ssl.keystore.type": "PKCS12", "ssl.key.password": STORE_PASSWORD,
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
    }
    with ApacheKafka(listeners={"SASL_SSL": "SASL_SSL"}, properties=properties) as kafka:
        made = kafka.tool("kafka-configs", "--bootstrap-server", kafka.bootstrap, "--alter", "--add-config",
                          f"SCRAM-SHA-512=[password={PASSWORD}]", "--entity-type", "users", "--entity-name", "worker")
        assert made.returncode == 0, made.stderr
        yield kafka, ca


def sasl_env(kafka: ApacheKafka, ca: Path, password: str) -> dict[str, str]:
    return {"NOTIF_KAFKA_BOOTSTRAP_SERVERS": kafka.address("SASL_SSL"), "NOTIF_SECURITY_PROTOCOL": "SASL_SSL",
            "NOTIF_SASL_MECHANISM": "SCRAM-SHA-512", "NOTIF_SASL_USERNAME": "worker",
            "NOTIF_SASL_PASSWORD": password, "NOTIF_SSL_CAFILE": str(ca)}


async def test_the_worker_serves_through_scram_over_tls(secured: tuple[ApacheKafka, Path]) -> None:
    kafka, ca = secured
    topics: Topics = await topic_maker(kafka.bootstrap, idempotent=True)(partitions=2)
    await produce(kafka.bootstrap, topics.input, notification_messages(10), partitions=2)
    secure = {key.removeprefix("NOTIF_").lower(): value for key, value in sasl_env(kafka, ca, PASSWORD).items()}
    async with running_worker(settings_for(topics, kafka.bootstrap, **secure)):
        outputs = await read_all(kafka.bootstrap, topics.output, at_least=10, timeout_s=60)
    assert sorted(json.loads(r.value)["id"] for r in outputs) == sorted(f"n{i}" for i in range(10))


def test_a_wrong_password_is_a_clear_start_up_error(secured: tuple[ApacheKafka, Path], tmp_path: Path) -> None:
    kafka, ca = secured
    env = subprocess_env(**sasl_env(kafka, ca, "not-the-password"), NOTIF_LOG_FORMAT="json",
                         NOTIF_METRICS_PORT="0", NOTIF_METRICS_HOST="127.0.0.1")
    run = subprocess.run([sys.executable, "-m", "worker", "serve", "--instant-classifier"], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 2, run.stdout[-3000:] + run.stderr[-3000:]
    events = [json.loads(line) for line in (run.stdout + run.stderr).splitlines() if line.startswith("{")]
    failed = [event for event in events if event["event"] == "broker_authentication_failed"]
    assert failed and "SaslAuthenticationFailed" in failed[0]["error"] and "NOTIF_SASL_PASSWORD" in failed[0]["fix"]
    doctor = subprocess.run([sys.executable, "-m", "worker", "doctor", "--skip-model", "--json"], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    broker = next(check for check in json.loads(doctor.stdout) if check["check"] == "broker")
    assert doctor.returncode == 1 and broker["status"] == "fail" and "refused the SASL login" in broker["detail"]


def test_the_doctor_names_which_of_tls_and_sasl_failed(secured: tuple[ApacheKafka, Path], tmp_path: Path) -> None:
    kafka, ca = secured
    stranger = tmp_path / "stranger.p12"  # a CA that did not sign the broker's certificate
    keytool("-genkeypair", "-alias", "stranger", "-keyalg", "RSA", "-keysize", "2048", "-validity", "2",
            "-dname", "CN=stranger", "-keystore", str(stranger), "-storetype", "PKCS12",
            "-storepass", STORE_PASSWORD, "-keypass", STORE_PASSWORD)
    keytool("-exportcert", "-alias", "stranger", "-keystore", str(stranger), "-storepass", STORE_PASSWORD, "-rfc",
            "-file", str(tmp_path / "stranger.pem"))
    found: dict[str, dict[str, str]] = {}
    for fault, (password, cafile) in {"sasl": ("not-the-password", ca), "tls": (PASSWORD, tmp_path / "stranger.pem"),
                                      "none": (PASSWORD, ca)}.items():
        env = subprocess_env(**{**sasl_env(kafka, ca, password), "NOTIF_SSL_CAFILE": str(cafile)},
                             NOTIF_METRICS_PORT="0")
        doctor = subprocess.run([sys.executable, "-m", "worker", "doctor", "--skip-model", "--json"], env=env,
                                capture_output=True, text=True, timeout=120, check=False)
        found[fault] = next(check for check in json.loads(doctor.stdout) if check["check"] == "broker")
    assert found["sasl"]["status"] == "fail" and "SASL" in found["sasl"]["detail"]
    assert "NOTIF_SASL_PASSWORD" in found["sasl"]["fix"] and "NOTIF_SSL_CAFILE" not in found["sasl"]["fix"]
    assert found["tls"]["status"] == "fail" and "TLS" in found["tls"]["detail"]
    assert "NOTIF_SSL_CAFILE" in found["tls"]["fix"] and "NOTIF_SASL_PASSWORD" not in found["tls"]["fix"]
    assert found["none"]["status"] == "ok" and "SASL_SSL" in found["none"]["detail"]

"""ACLs on Apache Kafka (its StandardAuthorizer), asserted from outside a real worker process.

The worker logs in as User:worker (SCRAM-SHA-512); the test's own clients use the PLAINTEXT listener, whose
principal (User:ANONYMOUS) is a super user. A missing ACL is an operator's fix that needs no restart: the worker
reports not-ready naming the operation and the resource, counts it in notif_authorization_denied_total (the
NotifNotAuthorized alert), commits nothing past what was published, dead-letters nothing, and goes on by itself
once the ACL is granted: every input gets its one result.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.kafka_helpers import (
    Topics,
    WorkerProcess,
    committed,
    eventually,
    notification_messages,
    produce,
    read_all,
    topic_maker,
)
from tests.integration.test_refusals import metric
from tests.support import subprocess_env
from worker.dev.apache_kafka import ApacheKafka

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

PRINCIPAL, PASSWORD = "User:worker", "worker-secret"
ENV = {"NOTIF_COMMIT_INTERVAL_MS": "100", "NOTIF_RETRY_BACKOFF_MAX_S": "1", "NOTIF_PUBLISH_STALL_S": "2"}


@pytest.fixture(scope="module")
def authorized() -> Iterator[ApacheKafka]:
    """A broker whose SASL_PLAINTEXT listener (SCRAM-SHA-512) is under Kafka's StandardAuthorizer."""
    properties = {
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:ANONYMOUS",  # the PLAINTEXT and controller listeners: the broker itself and the test
        "allow.everyone.if.no.acl.found": "false",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
    }
    with ApacheKafka(listeners={"SASL_PLAINTEXT": "SASL_PLAINTEXT"}, properties=properties) as kafka:
        kafka.add_scram_user("worker", PASSWORD)
        yield kafka


def grant(kafka: ApacheKafka, operation: str, *resource: str) -> None:
    """kafka-acls --add: allow the worker's principal ``operation`` on ``resource`` (--topic T, --group G)."""
    run = kafka.tool("kafka-acls", "--bootstrap-server", kafka.bootstrap, "--add", "--allow-principal", PRINCIPAL,
                     "--operation", operation, *resource)
    assert run.returncode == 0, run.stderr


def worker_env(kafka: ApacheKafka, topics: Topics) -> dict[str, str]:
    return {**topics.env(kafka.address("SASL_PLAINTEXT")), **ENV, "NOTIF_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "NOTIF_SASL_MECHANISM": "SCRAM-SHA-512", "NOTIF_SASL_USERNAME": "worker", "NOTIF_SASL_PASSWORD": PASSWORD}


async def denied_then_granted(kafka: ApacheKafka, tmp_path: Path, withheld: str) -> None:
    """Every ACL the worker needs but ``withheld`` (output: Write on it; group: Read on it); five inputs; the
    doctor, which names the missing ACL; a worker.

    While the ACL is missing: /readyz 503 naming it, the denial counted, nothing committed, nothing dead-lettered,
    the process alive. Once granted: every input's one result, everything committed, /readyz 200."""
    topics = await topic_maker(kafka.bootstrap, idempotent=True)(partitions=1)
    needed = {"input": ("Read", "--topic", topics.input), "group": ("Read", "--group", topics.group),
              "output": ("Write", "--topic", topics.output), "dlq": ("Write", "--topic", topics.dlq)}
    for role, (operation, kind, name) in needed.items():
        if role != withheld:
            grant(kafka, operation, kind, name)
    inputs = notification_messages(5)
    await produce(kafka.bootstrap, topics.input, inputs, partitions=1)
    operation, kind, name = needed[withheld]
    doctor = subprocess.run([sys.executable, "-m", "worker", "doctor", "--skip-model", "--json"],
                            env=subprocess_env(**worker_env(kafka, topics), NOTIF_METRICS_PORT="0"),
                            capture_output=True, text=True, timeout=120, check=False)
    role = {"output": "output topic", "group": "group"}[withheld]
    check = next(c for c in json.loads(doctor.stdout) if c["check"] == role)
    assert doctor.returncode == 1 and check["status"] == "fail" and "not authorized" in check["detail"], check
    assert check["fix"].endswith(f"--operation {operation} {kind} {name}"), check  # the kafka-acls line
    worker = WorkerProcess(worker_env(kafka, topics), tmp_path / "worker.log").start()
    try:
        async def not_ready_naming_the_acl() -> bool:
            assert worker.alive, worker.log_tail()
            status, body = worker.get("/readyz")
            return status == 503 and "not authorized" in body and name in body

        await eventually(not_ready_naming_the_acl, 60, f"/readyz 503 naming {operation} on {name}")
        _, reason = worker.get("/readyz")
        assert operation in reason, reason
        _, text = worker.get("/metrics")
        resource = f"{kind.removeprefix('--')}:{name}"
        assert metric(text, f'notif_authorization_denied_total{{operation="{operation}",'
                            f'resource="{resource}"}}') >= 1, text
        assert await committed(kafka.bootstrap, topics.group, topics.input) in ({}, {0: 0})
        assert await read_all(kafka.bootstrap, topics.dlq, at_least=0, timeout_s=2) == []
        assert worker.alive, worker.log_tail()

        grant(kafka, operation, kind, name)  # the operator's fix: no restart

        async def all_committed() -> bool:
            return await committed(kafka.bootstrap, topics.group, topics.input) == {0: len(inputs)}

        await eventually(all_committed, 90, "every input committed once the ACL is granted")
        outputs = await read_all(kafka.bootstrap, topics.output, at_least=len(inputs), timeout_s=30)
        await worker.wait_ready(30)
    finally:
        worker.stop()
    assert sorted(json.loads(r.value)["id"] for r in outputs) == sorted(f"n{i}" for i in range(len(inputs)))
    assert await read_all(kafka.bootstrap, topics.dlq, at_least=0, timeout_s=2) == []
    assert [e for e in worker.events() if e["event"] == "not_authorized"]


async def test_without_write_on_the_output_topic_nothing_is_committed_or_lost_until_granted(
        authorized: ApacheKafka, tmp_path: Path) -> None:
    await denied_then_granted(authorized, tmp_path, "output")


async def test_without_read_on_the_group_the_worker_waits_not_ready_until_granted(
        authorized: ApacheKafka, tmp_path: Path) -> None:
    await denied_then_granted(authorized, tmp_path, "group")

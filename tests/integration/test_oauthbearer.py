"""SASL OAUTHBEARER on Apache Kafka, the broker validating the tokens with its own JWT validator against the
JWKS of a test identity provider (tests/identity_provider.py): the worker serves across several token lifetimes,
each token fetched before the last expired, while the broker ends every session whose token expired
(connections.max.reauth.ms); an unreachable token endpoint and a refused client are clear start-up errors (exit 2)
that the doctor names too."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.identity_provider import IdentityProvider
from tests.integration.kafka_helpers import Topics, notification_messages, produce, read_all, topic_maker
from tests.integration.pipeline_helpers import running_worker, settings_for
from tests.support import subprocess_env
from worker.dev.apache_kafka import ApacheKafka
from worker.dev.broker import free_port
from worker.settings import Settings
from worker.stream.kafka.oauth import token_provider
from worker.stream.kafka.options import login_refusal

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

LIFETIME_S = 10  # short, so that the test outlives a few tokens
REAUTH_MS = 4000  # the broker ends a session at this age, or when its token expires if sooner
VALIDATOR = "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler"


@pytest.fixture(scope="module")
def oauth_kafka() -> Iterator[tuple[ApacheKafka, IdentityProvider]]:
    """A broker with a SASL_PLAINTEXT listener (OAUTHBEARER) beside its PLAINTEXT one, and the identity provider
    whose JWKS it trusts."""
    with IdentityProvider(lifetime_s=LIFETIME_S) as idp:
        properties = {
            "sasl.enabled.mechanisms": "OAUTHBEARER",
            "listener.name.sasl_plaintext.oauthbearer.sasl.server.callback.handler.class": VALIDATOR,
            "listener.name.sasl_plaintext.oauthbearer.sasl.jaas.config":
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;",
            "sasl.oauthbearer.jwks.endpoint.url": idp.jwks_url,
            "sasl.oauthbearer.expected.audience": idp.audience,
            "sasl.oauthbearer.expected.issuer": idp.issuer,
            "sasl.oauthbearer.clock.skew.seconds": "0",  # an expired token is refused at once (30 s by default)
            "connections.max.reauth.ms": str(REAUTH_MS),
        }
        jvm = {"org.apache.kafka.sasl.oauthbearer.allowed.urls": idp.jwks_url}
        with ApacheKafka(listeners={"SASL_PLAINTEXT": "SASL_PLAINTEXT"}, properties=properties,
                         jvm_properties=jvm) as kafka:
            yield kafka, idp


def oauth_env(kafka: ApacheKafka, url: str, secret: str) -> dict[str, str]:
    return {"NOTIF_KAFKA_BOOTSTRAP_SERVERS": kafka.address("SASL_PLAINTEXT"),
            "NOTIF_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "NOTIF_SASL_MECHANISM": "OAUTHBEARER",
            "NOTIF_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": url, "NOTIF_SASL_OAUTHBEARER_CLIENT_ID": "notif-worker",
            "NOTIF_SASL_OAUTHBEARER_CLIENT_SECRET": secret, "NOTIF_SASL_OAUTHBEARER_SCOPE": "kafka"}


async def test_the_worker_serves_through_oauthbearer_across_token_lifetimes(
        oauth_kafka: tuple[ApacheKafka, IdentityProvider], caplog: pytest.LogCaptureFixture) -> None:
    kafka, idp = oauth_kafka
    caplog.set_level(logging.INFO, logger="aiokafka.conn")
    topics: Topics = await topic_maker(kafka.bootstrap, idempotent=True)(partitions=2)
    await produce(kafka.bootstrap, topics.input, notification_messages(10), partitions=2)
    oauth = {key.removeprefix("NOTIF_").lower(): value
             for key, value in oauth_env(kafka, idp.token_url, idp.client_secret).items()}
    settings: Settings = settings_for(topics, kafka.bootstrap, **oauth)
    began, issued_before = time.time(), len(idp.issued)
    try:
        async with running_worker(settings):
            outputs = await read_all(kafka.bootstrap, topics.output, at_least=10, timeout_s=60)
            await asyncio.sleep(max(0.0, began + 2.5 * LIFETIME_S - time.time()))  # the first token long expired
            await produce(kafka.bootstrap, topics.input, notification_messages(10, prefix="late"), partitions=2)
            outputs = await read_all(kafka.bootstrap, topics.output, at_least=20, timeout_s=60)
            assert await login_refusal(settings) is None  # a new login, with the renewed token, is accepted
    finally:
        token_provider(settings).close()
    ids = sorted(json.loads(record.value)["id"] for record in outputs)
    assert ids == sorted([f"n{i}" for i in range(10)] + [f"late{i}" for i in range(10)])
    issued = idp.issued[issued_before:]
    assert len(issued) >= 3, issued
    assert all(later.at < earlier.expires for earlier, later in itertools.pairwise(issued)), issued
    # aiokafka does not re-authenticate (KIP-368): the broker ends each session at REAUTH_MS or its token's expiry
    # and the client logs in again on a new connection, with whichever token the provider holds then.
    logins = [record.created for record in caplog.records if record.getMessage() == "Authenticated via OAUTHBEARER"]
    assert len([at for at in logins if at > issued[0].expires]) >= 3, (logins, issued)


def serve_and_doctor(env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], list[dict[str, str]],
                                                   dict[str, str]]:
    """``serve --instant-classifier`` (its run and JSON events) and the doctor's broker check, with this env."""
    run = subprocess.run([sys.executable, "-m", "worker", "serve", "--instant-classifier"], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    events = [json.loads(line) for line in (run.stdout + run.stderr).splitlines() if line.startswith("{")]
    doctor = subprocess.run([sys.executable, "-m", "worker", "doctor", "--skip-model", "--json"], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert doctor.returncode == 1, doctor.stdout[-2000:] + doctor.stderr[-2000:]
    broker = next(check for check in json.loads(doctor.stdout) if check["check"] == "broker")
    return run, events, broker


@pytest.mark.parametrize("fault", ["unreachable", "refused"])
def test_no_token_is_a_clear_start_up_error(oauth_kafka: tuple[ApacheKafka, IdentityProvider], fault: str) -> None:
    kafka, idp = oauth_kafka
    url = f"http://127.0.0.1:{free_port('127.0.0.1')}/token" if fault == "unreachable" else idp.token_url
    secret = "not-the-secret" if fault == "refused" else idp.client_secret
    env = subprocess_env(**oauth_env(kafka, url, secret), NOTIF_LOG_FORMAT="json", NOTIF_METRICS_PORT="0",
                         NOTIF_METRICS_HOST="127.0.0.1")
    run, events, broker = serve_and_doctor(env)
    assert run.returncode == 2, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stdout + run.stderr
    failed = [event for event in events if event["event"] == "oauth_token_failed"]
    assert len(failed) == 1 and url in failed[0]["error"], events[-5:]
    assert "NOTIF_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL" in failed[0]["fix"]
    assert "NOTIF_SASL_OAUTHBEARER_CLIENT_SECRET" in failed[0]["fix"]
    expected = "is unreachable" if fault == "unreachable" else "answered HTTP 401 (invalid_client"
    assert expected in failed[0]["error"]
    assert "client-s3cret" not in run.stdout + run.stderr and "not-the-secret" not in run.stdout + run.stderr
    assert broker["status"] == "fail" and "no OAuth token" in broker["detail"] and expected in broker["detail"]
    assert "NOTIF_SASL_OAUTHBEARER_CLIENT_ID" in broker["fix"]

"""The consumer's and producer's options, built from Settings: connection, security, membership timing."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from aiokafka import errors as Errors
from aiokafka.conn import create_conn
from aiokafka.helpers import create_ssl_context

from worker.settings import Settings
from worker.stream.kafka.errors import KafkaConfigError, OAuthTokenFailed
from worker.stream.kafka.oauth import TokenUnavailable, token_provider

# Room above the largest record the consumer fetches (1 MiB by default), so a dead letter that carries
# an oversized input unchanged is never too large for our own producer.
PRODUCER_MAX_REQUEST_BYTES = 2 * 1024 * 1024
REBALANCE_MARGIN_MS = 10_000
PRODUCER_LINGER_MS = 5
# Record batches the worker builds (KafkaClients.send_batches) hold up to this many bytes per partition.
# aiokafka's 16 KiB default fits ~60 results; the broker's default limit on a batch is 1 MB.
PRODUCER_BATCH_BYTES = 512 * 1024
# How long the broker may hold a fetch when no data is there. Kafka and Redpanda answer as soon as a record
# arrives; Tansu holds it for the whole wait, which then sets the end-to-end latency (500 ms by default).
FETCH_MAX_WAIT_MS = 100

def client_options(settings: Settings) -> dict[str, Any]:
    """Connection options shared by consumer and producer: brokers, client id, TLS and SASL."""
    options: dict[str, Any] = {
        "bootstrap_servers": [server.strip() for server in settings.kafka_bootstrap_servers.split(",")],
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=settings.ssl_cafile, certfile=settings.ssl_certfile, keyfile=settings.ssl_keyfile
        )
    if settings.security_protocol.startswith("SASL"):
        if settings.sasl_mechanism is None:
            raise KafkaConfigError(f"{settings.security_protocol} needs NOTIF_SASL_MECHANISM")
        options["sasl_mechanism"] = settings.sasl_mechanism
        if settings.sasl_mechanism == "OAUTHBEARER":
            options["sasl_oauth_token_provider"] = token_provider(settings)
            return options
        options["sasl_plain_username"] = settings.sasl_username
        password = settings.sasl_password
        options["sasl_plain_password"] = password.get_secret_value() if password is not None else None
    return options


def consumer_options(settings: Settings) -> dict[str, Any]:
    """The consumer: our own commits, earliest offset for a new group, membership timing from Settings.

    A rebalance waits for every member's revocation callback: ours drains the revoked partitions (up to
    NOTIF_SHUTDOWN_TIMEOUT_S) and then commits them (up to NOTIF_COMMIT_TIMEOUT_S), so the rebalance timeout
    leaves room above both. The worker polls even while every partition is paused (worker/stream/flow/intake.py),
    so max.poll.interval counts the time between polls, never the model's time.
    """
    drain_and_commit_ms = int((settings.shutdown_timeout_s + settings.commit_timeout_s) * 1000)
    return {
        **client_options(settings),
        "group_id": settings.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "rebalance_timeout_ms": drain_and_commit_ms + REBALANCE_MARGIN_MS,
        "max_poll_interval_ms": settings.max_poll_interval_ms,
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
        "isolation_level": settings.isolation_level,
        **({"group_instance_id": settings.group_instance_id} if settings.group_instance_id else {}),
    }


def producer_options(settings: Settings) -> dict[str, Any]:
    """The producer: every in-sync replica acknowledges; idempotent unless the broker cannot do it."""
    return {
        **client_options(settings),
        "acks": "all",
        "enable_idempotence": settings.producer_idempotence,
        "linger_ms": PRODUCER_LINGER_MS,
        "max_request_size": PRODUCER_MAX_REQUEST_BYTES,
        "max_batch_size": PRODUCER_BATCH_BYTES,
        "request_timeout_ms": settings.publish_timeout_ms,
        "compression_type": None if settings.output_compression == "none" else settings.output_compression,
    }



@dataclass(frozen=True)
class Refusal:
    """Who turned us away: ``layer`` is ``tls`` (we did not trust the broker's certificate),
    ``client_certificate`` (mutual TLS: the broker did not accept ours) or ``sasl`` (the login); each has its fix."""

    layer: str
    detail: str

    @property
    def fix(self) -> str:
        return _FIXES[self.layer]


_FIXES = {
    "tls": "NOTIF_SSL_CAFILE must hold the CA that signed the broker's certificate, and the certificate must name "
           "the host in NOTIF_KAFKA_BOOTSTRAP_SERVERS",
    "client_certificate": "the broker asks for a client certificate (mutual TLS): set NOTIF_SSL_CERTFILE and "
                          "NOTIF_SSL_KEYFILE to a certificate signed by a CA in the broker's truststore, not expired",
    "sasl": "check NOTIF_SASL_USERNAME and NOTIF_SASL_PASSWORD, and that the listener enables NOTIF_SASL_MECHANISM",
}


async def login_refusal(settings: Settings) -> Refusal | None:
    """Why the first bootstrap server refuses us (the SASL login, TLS either way), or None: it did not refuse.

    One direct connection with the worker's own options, which raises the broker's answer that the client's
    bootstrap reports only as "Unable to bootstrap". A broker that refuses our client certificate completes the
    handshake and then sends a TLS alert, which aiokafka reports as a closed connection caused by an SSLError.
    With OAUTHBEARER and no token to log in with, the broker was never asked: OAuthTokenFailed (naming the token
    endpoint) is raised instead."""
    options = client_options(settings)
    host, _, port = options["bootstrap_servers"][0].rpartition(":")
    try:
        conn = await create_conn(host, int(port), request_timeout_ms=10_000, **{
            key: options[key] for key in ("client_id", "ssl_context", "security_protocol", "sasl_mechanism",
                                          "sasl_plain_username", "sasl_plain_password", "sasl_oauth_token_provider")
            if key in options})
    except TokenUnavailable as exc:  # a KafkaConnectionError to aiokafka, caught before the generic ones below
        raise OAuthTokenFailed(str(exc)) from exc
    except (Errors.SaslAuthenticationFailed, Errors.AuthenticationFailedError) as exc:
        return Refusal("sasl", f"{type(exc).__name__}: {exc}")
    except ssl.SSLError as exc:
        return _tls_refusal(settings, exc)
    except Errors.KafkaConnectionError as exc:
        return _tls_refusal(settings, exc.__cause__) if isinstance(exc.__cause__, ssl.SSLError) else None
    except (Errors.KafkaError, OSError, ValueError):
        return None  # unreachable, or something else: not a refusal of who we are
    conn.close()
    return None


def _tls_refusal(settings: Settings, exc: ssl.SSLError) -> Refusal:
    text = f"{type(exc).__name__}: {exc}"
    if "ALERT" in text.upper() and ("CERTIFICATE" in text.upper() or "UNKNOWN_CA" in text.upper()):
        given = (f"{settings.ssl_certfile} was not accepted" if settings.ssl_certfile else
                 "none was given (NOTIF_SSL_CERTFILE is unset)")
        return Refusal("client_certificate", f"the broker refused our client certificate: {given} ({text})")
    return Refusal("tls", f"the TLS handshake failed: {text}")

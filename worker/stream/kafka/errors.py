"""The Kafka edge's errors: aiokafka's errors translated to ours, and how long to wait before a retry.

Nothing past worker/stream/kafka/ imports aiokafka's error types; the pipeline sees only the exceptions below.

Exceptions:
    BrokerError              base class
    ├── BrokerUnavailable    the cluster cannot be reached or did not answer in time (retried)
    ├── CommitRejected       the group moved on: the partitions may belong to another member now
    ├── PublishFailed        a result or dead letter was not acknowledged (retried)
    ├── AccessDenied         the broker's ACLs deny this principal an operation on a resource (retried: an
    │                        ACL granted needs no restart; not-ready while it lasts)
    ├── UndecodableFetch     the client could not decode a fetched record (worker/stream/kafka/undecodable.py)
    ├── TransactionFailed    an exactly-once transaction could not be committed (fenced or aborted)
    ├── AuthenticationFailed the broker refused the credentials (SASL) or the TLS handshake: not retried
    │   └── OAuthTokenFailed no OAuth token to log in with: the token endpoint is unreachable or refused us
    └── KafkaConfigError     the settings cannot describe a working client
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from typing import Any

try:  # aiokafka's codec library for snappy, lz4 and zstd (worker/stream/kafka/codecs.py checks it at start-up)
    import cramjam
except ImportError:
    cramjam = None  # type: ignore[assignment]

from aiokafka import errors as Errors
from aiokafka.errors import CorruptRecordException, KafkaError, MessageSizeTooLargeError, UnsupportedCodecError


class BrokerError(Exception):
    """Base class of the Kafka edge's errors."""


class BrokerUnavailable(BrokerError):
    """The cluster could not be reached or did not answer in time."""


class CommitRejected(BrokerError):
    """An offset commit the group refused: it has rebalanced, or the partition is not ours any more."""


class PublishFailed(BrokerError):
    """A message was not acknowledged by the broker.

    ``refused`` names why the broker or producer refuses this message for good (``too_large``,
    ``invalid_topic``, ``invalid_record``); None means transient: retry it. ``denied``: the topic's ACLs deny
    us Write, retried too (an operator grants it, and the worker goes on without a restart).
    ``before_sending``: the producer refused it itself, so it never reached the broker (nor a transaction).
    """

    def __init__(self, message: str, *, refused: str | None = None, before_sending: bool = False,
                 denied: AccessDenied | None = None) -> None:
        super().__init__(message)
        self.refused = refused
        self.before_sending = before_sending
        self.denied = denied

    @property
    def retriable(self) -> bool:
        return self.refused is None


# Errors that no retry can cure, by the reason a dead letter records. Everything else (timeouts,
# connections, leader changes, unknown topics that may yet be created, ACLs not granted yet) is retried.
_REFUSALS: dict[type[KafkaError], str] = {
    Errors.MessageSizeTooLargeError: "too_large",
    Errors.RecordListTooLargeError: "too_large",
    Errors.InvalidTopicError: "invalid_topic",
    Errors.CorruptRecordException: "invalid_record",
    Errors.PolicyViolationError: "invalid_record",
}


class MessageSizeTooLargeForProducer(MessageSizeTooLargeError):  # type: ignore[misc]
    """A message over the producer's request limit, refused by the worker before it reached any producer."""


def publish_failed(topic: str, exc: BaseException, *, before_sending: bool = False) -> PublishFailed:
    """Our error for an aiokafka publish error: transient, or refused for good (and why)."""
    refused = next((reason for kind, reason in _REFUSALS.items() if isinstance(exc, kind)), None)
    return PublishFailed(f"publish to {topic} failed: {exc!r}", refused=refused,
                         before_sending=before_sending or isinstance(exc, MessageSizeTooLargeForProducer),
                         denied=access_denied(exc, "Write", topic=topic))


class AccessDenied(BrokerError):
    """The broker's ACLs deny this worker's principal ``operation`` (Kafka's name: Read, Write, IdempotentWrite)
    on ``resource`` (``topic:T``, ``group:G``, ``transactional-id:I``, ``cluster``): an operator's fix, so the
    worker retries until it is granted, not-ready meanwhile."""

    def __init__(self, operation: str, resource: str, cause: BaseException | None = None) -> None:
        self.operation = operation
        self.resource = resource
        why = f" ({type(cause).__name__})" if cause is not None else ""
        super().__init__(f"not authorized: the broker's ACLs deny this worker's principal {operation} on {resource}"
                         f"{why}; grant it with {self.grant}")

    @property
    def grant(self) -> str:
        """The kafka-acls command that grants it."""
        kind, _, name = self.resource.partition(":")
        return (f"kafka-acls --add --allow-principal User:<the worker's user> --operation {self.operation} "
                f"--{kind} {name}".rstrip())


def access_denied(exc: BaseException, operation: str, *, topic: str | None = None,
                  group: str | None = None) -> AccessDenied | None:
    """AccessDenied for an aiokafka authorization error (None for any other error)."""
    if isinstance(exc, Errors.TopicAuthorizationFailedError):
        return AccessDenied(operation, f"topic:{topic or _named(exc)}", exc)
    if isinstance(exc, Errors.GroupAuthorizationFailedError):
        return AccessDenied("Read", f"group:{group or _named(exc)}", exc)
    if isinstance(exc, Errors.TransactionalIdAuthorizationFailed):
        return AccessDenied("Write", "transactional-id:" + _named(exc), exc)
    if isinstance(exc, Errors.ClusterAuthorizationFailedError):
        return AccessDenied("IdempotentWrite", "cluster", exc)
    return None


def _named(exc: BaseException) -> str:
    """The resource aiokafka put in an authorization error: a name, or a set of topic names."""
    arg = exc.args[0] if exc.args else ""
    return ",".join(sorted(map(str, arg))) if isinstance(arg, set | frozenset | list | tuple) else str(arg)


class UndecodableFetch(BrokerError):
    """A fetched record the client cannot decode: a header key that is not UTF-8, a CRC mismatch, a broken batch.

    aiokafka raises these while it iterates a fetch, after it has taken records of other partitions
    (and of this one, before the bad record) that it then never returns: the caller must rewind.
    """


# What aiokafka's record reader raises for a record it cannot decode: a header key that is not UTF-8, a
# CRC mismatch or malformed batch, a codec it lacks, a batch that says gzip, snappy, lz4 or zstd but is not
# (cramjam raises DecompressionError for the last three).
UNDECODABLE_ERRORS: tuple[type[BaseException], ...] = (
    UnicodeDecodeError, CorruptRecordException, UnsupportedCodecError, gzip.BadGzipFile, zlib.error, EOFError,
    *((cramjam.DecompressionError,) if cramjam is not None else ()))


class TransactionFailed(BrokerError):
    """A partition's transaction could not be committed: a newer owner fenced it, or the broker aborted it.

    What it held never becomes visible; the worker stops (exit 1) and the partition's next owner reads
    again from the last committed position.
    """


class AuthenticationFailed(BrokerError):
    """The broker answered and refused who we are (a SASL login, a TLS certificate): fix the settings, retrying
    the same credentials cannot help. ``event`` and ``fix``: what `serve` logs as it exits (``fix`` names the
    layer that refused, when the caller knows it)."""

    event = "broker_authentication_failed"
    fix = "check NOTIF_SASL_MECHANISM, NOTIF_SASL_USERNAME, NOTIF_SASL_PASSWORD and the NOTIF_SSL_* files"

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        if fix is not None:
            self.fix = fix


class OAuthTokenFailed(AuthenticationFailed):
    """SASL OAUTHBEARER found no token to log in with: the token endpoint could not be reached, or it refused
    the client (worker/stream/kafka/oauth.py); the message names the endpoint."""

    event = "oauth_token_failed"
    fix = ("check NOTIF_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL (reachable from here: host, port, TLS), "
           "NOTIF_SASL_OAUTHBEARER_CLIENT_ID and NOTIF_SASL_OAUTHBEARER_CLIENT_SECRET (and "
           "NOTIF_SASL_OAUTHBEARER_SCOPE where the identity provider asks for one)")


class KafkaConfigError(BrokerError):
    """Settings that cannot describe a working client."""


def backoff_s(attempt: int, max_s: float, base_s: float = 0.5) -> float:
    """Exponential backoff: base, 2x base, 4x base, ... capped at max_s."""
    return float(min(max_s, base_s * 2 ** min(attempt, 30)))


def delivery_error(topic: str, delivery: asyncio.Future[Any]) -> PublishFailed | None:
    """Why a finished delivery future failed, as PublishFailed; None when the broker acknowledged it."""
    if delivery.cancelled():
        return PublishFailed(f"publish to {topic} was cancelled")
    exc = delivery.exception()
    return None if exc is None else publish_failed(topic, exc)


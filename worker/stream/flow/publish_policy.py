"""The publish-error policy (pure): what the outbox does with a message the broker did not take.

    transient (timeout, connection, leader change)  retry with backoff; counted in notif_publish_retries,
                                                    not-ready once it has lasted NOTIF_PUBLISH_STALL_S
    a result refused for good                       dead-letter its input instead, reason publish_rejected
    a dead letter refused for good (too large,      publish it without the value and the input's headers
    invalid topic, not authorized)                  (notif.error.value_omitted, original_size, publish_error)
    that refused too                                halt the partition: nothing past it is committed, not-ready

No message is skipped: each ends acknowledged, or its partition stops with the reason on /readyz.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from worker.stream.flow.records import (
    MAX_MESSAGE_CHARS,
    ORIGINAL_SIZE_HEADER,
    PUBLISH_ERROR_HEADER,
    PUBLISH_REJECTED,
    VALUE_OMITTED_HEADER,
)
from worker.stream.flow.work import Delivery, Work
from worker.stream.kafka.errors import PublishFailed

RESULT = "result"
DEAD_LETTER = "dead_letter"
VALUE_OMITTED = "value_omitted"
_OUR_HEADERS = ("notif.error.", "notif.source.")
MAX_KEPT_KEY_BYTES = 1024  # a value-less dead letter keeps the input's key only up to this (it may be the excess)


@dataclass(frozen=True)
class Retry:
    """Publish the same message again after a backoff."""


@dataclass(frozen=True)
class Replace:
    """Publish this message instead, now."""

    delivery: Delivery


@dataclass(frozen=True)
class Halt:
    """Nothing more can be published for this input: stop its partition."""

    reason: str


Decision = Retry | Replace | Halt
DeadLetter = Callable[[Work, str, str], Delivery]  # (work, reason, message) -> the dead letter of its input


def decide(delivery: Delivery, error: PublishFailed, dead_letter: DeadLetter) -> Decision:
    """The next step for a message the broker did not acknowledge."""
    if error.retriable:
        return Retry()
    if delivery.kind == RESULT:
        return Replace(dead_letter(delivery.work, PUBLISH_REJECTED, f"{delivery.topic} refused the result: {error}"))
    if delivery.kind == DEAD_LETTER:
        return Replace(without_value(delivery, error))
    record = delivery.work.record
    return Halt(f"{delivery.topic} refused even the value-less dead letter of {record.topic}:{record.partition}"
                f" offset {record.offset}: {error}")


def without_value(delivery: Delivery, error: PublishFailed) -> Delivery:
    """The dead letter with no value and only our headers (the input's, or a huge key, could be the excess)."""
    record = delivery.work.record
    headers = [(name, value) for name, value in delivery.headers if name.startswith(_OUR_HEADERS)]
    headers += [
        (VALUE_OMITTED_HEADER, b"true"),
        (ORIGINAL_SIZE_HEADER, str(len(record.value or b"")).encode()),
        (PUBLISH_ERROR_HEADER, str(error)[:MAX_MESSAGE_CHARS].encode("utf-8")),
    ]
    key = delivery.key if delivery.key is None or len(delivery.key) <= MAX_KEPT_KEY_BYTES else None
    return replace(delivery, key=key, value=None, headers=headers, kind=VALUE_OMITTED)

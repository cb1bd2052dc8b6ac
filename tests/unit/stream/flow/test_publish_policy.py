"""The publish-error policy: transient -> retry; refused result -> dead letter; refused dead letter -> no value."""

from __future__ import annotations

from aiokafka import errors as Errors
from aiokafka.structs import ConsumerRecord

from worker.stream.flow.offsets import PartitionOffsets
from worker.stream.flow.publish_policy import DEAD_LETTER, RESULT, VALUE_OMITTED, Halt, Replace, Retry, decide
from worker.stream.flow.records import dead_letter_headers
from worker.stream.flow.work import Delivery, Work
from worker.stream.kafka.errors import PublishFailed, publish_failed

TOO_LARGE = publish_failed("dlq", Errors.MessageSizeTooLargeError())


def work() -> Work:
    record = ConsumerRecord("raw", 2, 41, 0, 0, b"k", b"v" * 300, None, 1, 300, [("trace", b"t" * 50)])
    return Work(record, PartitionOffsets())


def dead_letter(item: Work, reason: str, message: str) -> Delivery:
    headers = dead_letter_headers(item.record.headers, reason=reason, message=message, topic="raw", partition=2,
                                  offset=41)
    return Delivery(item, "dlq", item.record.key, item.record.value, headers, None, kind=DEAD_LETTER)


def test_refusals_are_told_apart_from_transient_errors() -> None:
    assert TOO_LARGE.refused == "too_large" and not TOO_LARGE.retriable
    assert publish_failed("t", Errors.InvalidTopicError()).refused == "invalid_topic"
    for transient in (Errors.KafkaTimeoutError(), Errors.KafkaConnectionError(), Errors.NotLeaderForPartitionError(),
                      Errors.UnknownTopicOrPartitionError(), RuntimeError("?")):
        assert publish_failed("t", transient).retriable, transient


def test_a_transient_error_is_retried_whatever_the_message() -> None:
    item = work()
    for delivery in (Delivery(item, "out", b"k", b"{}", [], None), dead_letter(item, "too_large", "m")):
        assert decide(delivery, PublishFailed("timeout"), dead_letter) == Retry()


def test_a_refused_result_becomes_a_dead_letter_of_its_input() -> None:
    item = work()
    result = Delivery(item, "out", b"k", b"{}", [], None, kind=RESULT)
    decision = decide(result, publish_failed("out", Errors.InvalidTopicError()), dead_letter)
    assert isinstance(decision, Replace)
    headers = dict(decision.delivery.headers)
    assert decision.delivery.kind == DEAD_LETTER and decision.delivery.value == item.record.value
    assert headers["notif.error.reason"] == b"publish_rejected"
    assert b"InvalidTopicError" in headers["notif.error.message"]


def test_a_refused_dead_letter_goes_without_value_and_input_headers_then_halts() -> None:
    item = work()
    decision = decide(dead_letter(item, "too_large", "too big"), TOO_LARGE, dead_letter)
    assert isinstance(decision, Replace)
    stub = decision.delivery
    assert stub.kind == VALUE_OMITTED and stub.value is None and stub.key == b"k"
    headers = dict(stub.headers)
    assert "trace" not in headers
    assert headers["notif.error.reason"] == b"too_large"
    assert headers["notif.error.value_omitted"] == b"true"
    assert headers["notif.error.original_size"] == b"300"
    assert headers["notif.source.offset"] == b"41" and headers["notif.source.partition"] == b"2"
    halt = decide(stub, TOO_LARGE, dead_letter)
    assert isinstance(halt, Halt) and "raw:2 offset 41" in halt.reason


def test_a_denied_write_is_retried_and_names_the_acl_that_grants_it() -> None:
    """An ACL is granted without a restart: the message waits for it (a dead letter would skip the result)."""
    denied = publish_failed("classified", Errors.TopicAuthorizationFailedError("classified"))
    assert denied.retriable and denied.refused is None
    assert denied.denied is not None and denied.denied.resource == "topic:classified"
    assert "kafka-acls --add" in str(denied.denied) and "--operation Write --topic classified" in str(denied.denied)
    assert publish_failed("t", Errors.KafkaTimeoutError()).denied is None
    item = work()
    for delivery in (Delivery(item, "classified", b"k", b"{}", [], None, kind=RESULT), dead_letter(item, "x", "m")):
        assert decide(delivery, denied, dead_letter) == Retry()

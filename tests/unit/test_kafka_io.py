"""Client options from Settings (TLS, SASL, idempotence) and the retry backoff."""

from __future__ import annotations

import pytest

from worker.kafka_io import KafkaConfigError, backoff_s, consumer_options, producer_options
from worker.settings import Settings


def test_defaults_are_plaintext_idempotent_manual_commit() -> None:
    settings = Settings(kafka_bootstrap_servers="a:9092, b:9092")
    consumer = consumer_options(settings)
    producer = producer_options(settings)
    assert consumer["bootstrap_servers"] == ["a:9092", "b:9092"]
    assert consumer["enable_auto_commit"] is False
    assert consumer["group_id"] == "notif-worker"
    assert consumer["auto_offset_reset"] == "earliest"
    assert producer["enable_idempotence"] is True and producer["acks"] == "all"
    assert "ssl_context" not in producer and "sasl_mechanism" not in producer
    assert producer_options(settings.with_overrides(producer_idempotence=False))["enable_idempotence"] is False


def test_sasl_ssl_options() -> None:
    settings = Settings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="u",
                        sasl_password="p")
    options = consumer_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "u" and options["sasl_plain_password"] == "p"
    assert options["ssl_context"] is not None


def test_sasl_without_mechanism_or_with_oauth_is_refused() -> None:
    with pytest.raises(KafkaConfigError, match="NOTIF_SASL_MECHANISM"):
        producer_options(Settings(security_protocol="SASL_PLAINTEXT"))
    with pytest.raises(KafkaConfigError, match="OAUTHBEARER"):
        producer_options(Settings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="OAUTHBEARER"))


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_s(n, 5.0) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff_s(10_000, 30.0) == 30.0

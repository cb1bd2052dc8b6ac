"""Client options from Settings (TLS, SASL, idempotence), the retry backoff, and key partitioning."""

from __future__ import annotations

import random
import uuid

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as reference_murmur2
from pydantic import ValidationError

from worker.settings import Settings
from worker.stream.kafka.errors import KafkaConfigError, backoff_s
from worker.stream.kafka.options import consumer_options, producer_options
from worker.stream.kafka.partitioner import NUMPY_MIN_KEYS, murmur2_same_length, partitions_for_keys


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


def test_membership_timing_comes_from_settings_and_the_rebalance_outlasts_drain_plus_commit() -> None:
    settings = Settings(max_poll_interval_ms=7000, session_timeout_ms=12000, heartbeat_interval_ms=1500,
                        shutdown_timeout_s=20, commit_timeout_s=15)
    consumer = consumer_options(settings)
    assert (consumer["max_poll_interval_ms"], consumer["session_timeout_ms"], consumer["heartbeat_interval_ms"]) == (
        7000, 12000, 1500)
    assert consumer["rebalance_timeout_ms"] > (20 + 15) * 1000
    assert consumer_options(Settings())["max_poll_interval_ms"] == 300000
    with pytest.raises(ValidationError, match="HEARTBEAT"):
        Settings(session_timeout_ms=3000, heartbeat_interval_ms=3000)


def test_sasl_ssl_options() -> None:
    settings = Settings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="u",
                        sasl_password="p")
    options = consumer_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "u" and options["sasl_plain_password"] == "p"
    assert options["ssl_context"] is not None


def test_sasl_without_mechanism_or_oauth_without_its_client_is_refused() -> None:
    with pytest.raises(KafkaConfigError, match="NOTIF_SASL_MECHANISM"):
        producer_options(Settings(security_protocol="SASL_PLAINTEXT"))
    with pytest.raises(ValidationError, match="NOTIF_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL and "
                       "NOTIF_SASL_OAUTHBEARER_CLIENT_ID and NOTIF_SASL_OAUTHBEARER_CLIENT_SECRET"):
        Settings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="OAUTHBEARER")
    with pytest.raises(ValidationError, match="NOTIF_SASL_OAUTHBEARER_CLIENT_SECRET"):
        Settings(security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER", sasl_oauthbearer_client_id="w",
                 sasl_oauthbearer_token_endpoint_url="https://idp.example/token", sasl_oauthbearer_client_secret="")
    with pytest.raises(ValidationError, match="must be an http"):
        Settings(security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER", sasl_oauthbearer_client_id="w",
                 sasl_oauthbearer_token_endpoint_url="idp.example/token", sasl_oauthbearer_client_secret="s")


def test_oauthbearer_options_share_one_token_provider() -> None:
    settings = Settings(security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER", sasl_oauthbearer_client_id="w",
                        sasl_oauthbearer_token_endpoint_url="https://idp.example/token",
                        sasl_oauthbearer_client_secret="s", sasl_username="ignored")
    consumer, producer = consumer_options(settings), producer_options(settings)
    assert consumer["sasl_mechanism"] == "OAUTHBEARER" and "sasl_plain_username" not in consumer
    assert consumer["sasl_oauth_token_provider"] is producer["sasl_oauth_token_provider"]
    assert consumer["sasl_oauth_token_provider"].url == "https://idp.example/token"


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_s(n, 5.0) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff_s(10_000, 30.0) == 30.0


@pytest.mark.parametrize("seed", range(5))
def test_murmur2_is_kafkas(seed: int) -> None:
    rng = random.Random(seed)
    for length in [*range(0, 70), 255, 1000]:
        keys = [bytes(rng.randrange(256) for _ in range(length)) for _ in range(3)]
        assert murmur2_same_length(keys) == [reference_murmur2(key) for key in keys], length


def test_partitions_for_keys_match_the_default_partitioner() -> None:
    rng = random.Random(7)
    partitions = [0, 1, 2, 3, 4, 5, 6]
    # a group of same-length ids takes the numpy path, odd lengths the per-key one; None is random
    keys: list[bytes | None] = [str(uuid.UUID(int=rng.getrandbits(128))).encode() for _ in range(200)]
    keys += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) for _ in range(50)]
    keys += [None] * 5
    rng.shuffle(keys)
    assert sum(len(k) == 36 for k in keys if k) >= NUMPY_MIN_KEYS
    chosen = partitions_for_keys(keys, partitions)
    reference = DefaultPartitioner()
    for key, partition in zip(keys, chosen, strict=True):
        if key is None:
            assert partition in partitions
        else:
            assert partition == reference(key, partitions, partitions)


def test_the_consumer_reads_committed_and_takes_a_static_member_id_when_given() -> None:
    plain = consumer_options(Settings())
    assert plain["isolation_level"] == "read_committed" and "group_instance_id" not in plain
    static = consumer_options(Settings(group_instance_id="notif-worker-0", isolation_level="read_uncommitted"))
    assert static["group_instance_id"] == "notif-worker-0" and static["isolation_level"] == "read_uncommitted"
    assert "group_instance_id" not in consumer_options(Settings(group_instance_id=""))  # empty: not static


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_the_producer_compresses_with_the_output_codec(codec: str) -> None:
    expected = None if codec == "none" else codec
    assert producer_options(Settings(output_compression=codec))["compression_type"] == expected

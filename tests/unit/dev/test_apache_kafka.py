"""The Apache Kafka test broker's edges without a broker: Java or Maven missing, a failed or raced fetch, the lag table.

A stand-in `mvn` (a shell script on a PATH of the test's own) plays Maven, so nothing is downloaded.
"""

from __future__ import annotations

import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from worker.dev.apache_kafka import KAFKA_VERSION, ApacheKafka, kafka_libs, lag_table
from worker.dev.broker import BrokerStartError

# Writes the one jar the fetch checks for, slowly enough that racing fetches overlap, and counts its runs.
FAKE_MVN = """#!/bin/sh
PATH=/usr/bin:/bin
echo run >> "{runs}"
{body}
"""
WRITES_A_JAR = """for arg in "$@"; do case "$arg" in -DoutputDirectory=*) out="${arg#-DoutputDirectory=}";; esac; done
sleep 0.5
mkdir -p "$out" && : > "$out/kafka_2.13-4.4.0.jar"
"""
FAILS = """echo "[ERROR] Could not resolve dependencies for project dev.notif-triage:apache-kafka-test-broker"
exit 1
"""


def tool_path(tmp_path: Path, *, java: bool, mvn_body: str | None = None) -> Path:
    """A folder to be the whole PATH: a link to the real java if asked, a stand-in mvn if given."""
    folder = tmp_path / "bin"
    folder.mkdir()
    if java:
        real = shutil.which("java")
        assert real is not None, "the unit tests need a java to link to"
        (folder / "java").symlink_to(real)
    if mvn_body is not None:
        mvn = folder / "mvn"
        mvn.write_text(FAKE_MVN.format(runs=tmp_path / "mvn-runs", body=mvn_body))
        mvn.chmod(0o755)
    return folder


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache directory, and no JAVA_HOME: PATH alone says which tools exist."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("NOTIF_CACHE_DIR", str(folder))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    return folder


@pytest.mark.parametrize("cached", [False, True], ids=["empty-cache", "jars-cached"])
def test_without_java_starting_raises_naming_java_and_how_to_install_it(
        cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cached: bool) -> None:
    if cached:
        (cache / f"apache-kafka-{KAFKA_VERSION}" / "libs").mkdir(parents=True)
        (cache / f"apache-kafka-{KAFKA_VERSION}" / "complete").write_text(KAFKA_VERSION)
    monkeypatch.setenv("PATH", str(tool_path(tmp_path, java=False, mvn_body=WRITES_A_JAR)))
    scratch = tmp_path / "tmp"  # the broker's temporary folder would be made here
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.raises(BrokerStartError, match=r"needs Java 17 or newer.*openjdk-17-jre-headless.*JAVA_HOME"):
        ApacheKafka().start()
    assert not (tmp_path / "mvn-runs").exists(), "nothing is fetched without Java"
    assert list(scratch.iterdir()) == [], "no broker folder left behind"


def test_without_maven_an_empty_cache_raises_naming_maven(
        cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tool_path(tmp_path, java=True)))
    with pytest.raises(BrokerStartError, match=r"needs Maven.*apt-get install maven"):
        kafka_libs()
    assert [p.name for p in cache.iterdir()] == [f"apache-kafka-{KAFKA_VERSION}.lock"]


def test_a_failed_fetch_raises_with_mavens_words_and_caches_nothing(
        cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tool_path(tmp_path, java=True, mvn_body=FAILS)))
    with pytest.raises(BrokerStartError, match=r"Maven could not fetch Apache Kafka 4\.4\.0(.|\n)*Could not resolve"):
        kafka_libs()
    assert [p.name for p in cache.iterdir()] == [f"apache-kafka-{KAFKA_VERSION}.lock"], "no partial cache"


def test_racing_fetches_run_maven_once_and_all_see_the_complete_folder(
        cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tool_path(tmp_path, java=True, mvn_body=WRITES_A_JAR)))
    with ThreadPoolExecutor(4) as pool:  # flock excludes separate open() calls, threads as well as processes
        folders = list(pool.map(lambda _: kafka_libs(), range(4)))
    assert (tmp_path / "mvn-runs").read_text().splitlines() == ["run"]
    assert set(folders) == {cache / f"apache-kafka-{KAFKA_VERSION}" / "libs"}
    assert (folders[0] / "kafka_2.13-4.4.0.jar").exists()
    assert sorted(p.name for p in cache.iterdir()) == [f"apache-kafka-{KAFKA_VERSION}",
                                                       f"apache-kafka-{KAFKA_VERSION}.lock"]
    assert kafka_libs() == folders[0] and len((tmp_path / "mvn-runs").read_text().splitlines()) == 1


# As Kafka 4.4's kafka-consumer-groups --describe prints it for a group without members (columns narrowed).
DESCRIBE = """
Consumer group 'lag-1' has no active members.

GROUP  TOPIC  PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  CONSUMER-ID  HOST  CLIENT-ID
lag-1  lagging  0  3  10  7  -  -  -
lag-1  lagging  1  6  6  0  -  -  -
"""


def test_the_lag_table_is_read_by_its_header() -> None:
    rows = lag_table(DESCRIBE)
    assert [(r["PARTITION"], r["CURRENT-OFFSET"], r["LOG-END-OFFSET"], r["LAG"]) for r in rows] == [
        ("0", "3", "10", "7"), ("1", "6", "6", "0")]
    assert lag_table("Error: Consumer group 'nobody' does not exist.\n") == []


def test_extra_listeners_and_properties_reach_server_properties(tmp_path: Path) -> None:
    kafka = ApacheKafka(listeners={"SASL_SSL": "SASL_SSL"}, properties={"auto.create.topics.enable": "false"},
                        advertised={"PLAINTEXT": "127.0.0.1:1"})
    kafka.folder = tmp_path
    written = kafka.properties()
    assert written["listeners"] == ",".join(f"{name}://127.0.0.1:{kafka.ports[name]}"
                                            for name in ("PLAINTEXT", "CONTROLLER", "SASL_SSL"))
    assert written["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:1,SASL_SSL://{kafka.address('SASL_SSL')}"
    assert "SASL_SSL:SASL_SSL" in written["listener.security.protocol.map"].split(",")
    assert written["auto.create.topics.enable"] == "false" and written["log.dirs"] == str(tmp_path / "data")

"""Apache Kafka itself as a test broker: single-node KRaft on loopback, from Kafka's own jars on Maven Central.

The reference broker the suite proves the worker against (idempotent and transactional producers,
read_committed, static membership, topic limits, SASL, TLS and ACLs). `fetch_kafka` resolves
worker/dev/apache-kafka.pom.xml with Maven into the cache directory once (a lock, a temporary folder,
a rename: racing test processes are safe); `ApacheKafka` formats KRaft storage in a temporary folder,
starts the broker, waits for a real metadata answer and stops it. Kafka's command-line tools run from
the same jars (`ApacheKafka.tool`). Needs Java 17+ and Maven; their absence is an error, never a skip.

Exceptions:
    BrokerStartError    Java or Maven missing, the fetch failed, or the broker never answered
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError

from worker.dev.broker import BrokerStartError, free_port, terminate
from worker.dev.tokenizer import cache_root

KAFKA_VERSION = "4.4.0"
POM = Path(__file__).with_name("apache-kafka.pom.xml")
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
FETCH_TIMEOUT_S = 600.0
# Small and single-threaded enough for a shared 2-core machine; the tests' load is tiny.
JVM_OPTIONS = ("-Xms128m", "-Xmx768m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true")

# The shell scripts of Kafka's distribution, by the main class they run.
TOOLS = {
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-configs": "org.apache.kafka.tools.ConfigCommand",
    "kafka-acls": "org.apache.kafka.tools.AclCommand",
    "kafka-storage": "kafka.tools.StorageTool",
}

# A single node: every internal topic has one replica, groups start at once, few partitions to create.
BASE_PROPERTIES = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "4",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "num.partitions": "1",
    "log.flush.interval.messages": "1000000",
}

LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.org.name = org.apache.kafka
logger.org.level = WARN
"""


def java() -> str:
    """The java launcher ($JAVA_HOME/bin/java, else the PATH's)."""
    home = Path(os.environ.get("JAVA_HOME") or "/nonexistent") / "bin" / "java"
    found = str(home) if home.exists() else shutil.which("java")
    if not found:
        raise BrokerStartError("Apache Kafka needs Java 17 or newer: install a JDK (Debian: "
                               "`apt-get install openjdk-17-jre-headless`) or set JAVA_HOME")
    return found


def kafka_libs(cache_dir: Path | None = None) -> Path:
    """The folder of Kafka's jars, fetched with Maven into the cache on first use."""
    java()  # the jars are no use without it, and Maven needs it too: say so before fetching anything
    root = (cache_dir or cache_root()) / f"apache-kafka-{KAFKA_VERSION}"
    libs = root / "libs"
    if (root / "complete").exists():
        return libs
    with _locked(root.parent, f"apache-kafka-{KAFKA_VERSION}.lock"):
        if not (root / "complete").exists():
            _fetch(root)
    return libs


def _fetch(root: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerStartError("fetching Apache Kafka needs Maven: install it (Debian: `apt-get install maven`)")
    staging = Path(tempfile.mkdtemp(prefix="apache-kafka-", dir=root.parent))
    command = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", "-DincludeScope=runtime",
               f"-DoutputDirectory={staging / 'libs'}"]
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S, check=False)
        if run.returncode != 0 or not any((staging / "libs").glob("kafka_2.13-*.jar")):
            raise BrokerStartError(f"Maven could not fetch Apache Kafka {KAFKA_VERSION} ({POM.name}): "
                                   f"{(run.stdout + run.stderr)[-2000:]}")
        (staging / "complete").write_text(KAFKA_VERSION + "\n")
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)
    except subprocess.TimeoutExpired as exc:
        raise BrokerStartError(f"Maven did not fetch Apache Kafka within {FETCH_TIMEOUT_S}s") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def _locked(folder: Path, name: str) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / name).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ApacheKafka:
    """A single-node KRaft Apache Kafka on 127.0.0.1; ``with ApacheKafka() as kafka: kafka.bootstrap``.

    ``listeners``: extra client listeners by name, e.g. ``{"SASL_SSL": "SASL_SSL"}`` (name -> security
    protocol), each on a free port of its own (``port_of(name)``); ``properties`` are added to (and win over)
    the generated server.properties; ``jvm_properties`` become ``-D`` options (e.g. an allowed JWKS URL);
    ``advertised``: host:port a listener tells clients to connect to (a fault proxy in front of the broker).
    """

    def __init__(self, *, listeners: Mapping[str, str] | None = None, properties: Mapping[str, str] | None = None,
                 jvm_properties: Mapping[str, str] | None = None, advertised: Mapping[str, str] | None = None,
                 host: str = "127.0.0.1") -> None:
        self.host = host
        self.ports = {"PLAINTEXT": free_port(host), "CONTROLLER": free_port(host),
                      **{name: free_port(host) for name in (listeners or {})}}
        self.protocols = {"PLAINTEXT": "PLAINTEXT", "CONTROLLER": "PLAINTEXT", **(listeners or {})}
        self.extra = dict(properties or {})
        self.jvm_properties = dict(jvm_properties or {})
        self.advertised = dict(advertised or {})
        self.folder: Path | None = None
        self.startup_s: float | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return self.address("PLAINTEXT")

    def address(self, listener: str) -> str:
        return f"{self.host}:{self.ports[listener]}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def properties(self) -> dict[str, str]:
        assert self.folder is not None
        listeners = ",".join(f"{name}://{self.host}:{port}" for name, port in self.ports.items())
        advertised = ",".join(f"{name}://{self.advertised.get(name, f'{self.host}:{port}')}"
                              for name, port in self.ports.items() if name != "CONTROLLER")
        return {**BASE_PROPERTIES, "listeners": listeners, "advertised.listeners": advertised,
                "listener.security.protocol.map": ",".join(f"{n}:{p}" for n, p in self.protocols.items()),
                "controller.quorum.voters": f"1@{self.host}:{self.ports['CONTROLLER']}",
                "log.dirs": str(self.folder / "data"), **self.extra}

    def start(self, timeout_s: float = START_TIMEOUT_S) -> ApacheKafka:
        """Format storage, start the broker and wait until it answers a metadata request."""
        if self.running:
            return self
        began = time.monotonic()
        libs = kafka_libs()
        self.folder = Path(tempfile.mkdtemp(prefix="apache-kafka-"))
        try:  # whatever fails from here on, no process and no temporary folder is left behind
            config = self._format(libs)
            with (self.folder / "stdout.log").open("ab") as out:
                self._process = subprocess.Popen(self._command(libs, "kafka.Kafka", str(config)), stdout=out,
                                                 stderr=subprocess.STDOUT, cwd=self.folder)
            asyncio.run(self._wait_for_metadata(began + timeout_s))
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - began
        return self

    def _format(self, libs: Path) -> Path:
        """Write server.properties and the log4j2 configuration, format KRaft storage with a fresh cluster id."""
        assert self.folder is not None
        config = self.folder / "server.properties"
        config.write_text("".join(f"{key}={value}\n" for key, value in self.properties().items()))
        (self.folder / "log4j2.properties").write_text(LOG4J2.format(log=self.folder / "server.log"))
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        formatted = self._java(libs, TOOLS["kafka-storage"], "format", f"--cluster-id={cluster_id}",
                               f"--config={config}")
        if formatted.returncode != 0:
            raise BrokerStartError(f"kafka-storage format failed: {formatted.stdout}{formatted.stderr}")
        return config

    async def _wait_for_metadata(self, deadline: float) -> None:
        quiet = logging.getLogger("aiokafka")  # "Unable connect" at every try until the broker listens
        level, quiet.level = quiet.level, logging.CRITICAL
        try:
            await self._poll_metadata(deadline)
        finally:
            quiet.setLevel(level)

    async def _poll_metadata(self, deadline: float) -> None:
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise BrokerStartError(f"Apache Kafka exited with {self._process.returncode}: {self.log_tail()}")
            client = AIOKafkaClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
            try:
                await client.bootstrap()
                if client.cluster.brokers():
                    return
            except (KafkaError, OSError):
                pass
            finally:
                await client.close()
            if time.monotonic() > deadline:
                raise BrokerStartError(f"Apache Kafka did not answer on {self.bootstrap}: {self.log_tail()}")
            await asyncio.sleep(0.2)

    def _command(self, libs: Path, main: str, *args: str) -> list[str]:
        log4j = f"-Dlog4j2.configurationFile={self.folder / 'log4j2.properties'}" if self.folder else ""
        jvm = [*JVM_OPTIONS, *(f"-D{k}={v}" for k, v in self.jvm_properties.items()), *([log4j] if log4j else [])]
        return [java(), *jvm, "-cp", f"{libs}/*", main, *args]

    def _java(self, libs: Path, main: str, *args: str, input_text: str | None = None,
              timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._command(libs, main, *args), capture_output=True, text=True, input=input_text,
                              timeout=timeout_s, check=False)

    def tool(self, name: str, *args: str, input_text: str | None = None,
             timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run one of Kafka's command-line tools (``kafka-consumer-groups``, ...) from the broker's own jars."""
        return self._java(kafka_libs(), TOOLS[name], *args, input_text=input_text, timeout_s=timeout_s)

    def add_scram_user(self, user: str, password: str, mechanism: str = "SCRAM-SHA-512") -> None:
        """Create a SCRAM user with Kafka's own admin tool (kafka-configs) over the PLAINTEXT listener."""
        made = self.tool("kafka-configs", "--bootstrap-server", self.bootstrap, "--alter", "--add-config",
                         f"{mechanism}=[password={password}]", "--entity-type", "users", "--entity-name", user)
        if made.returncode != 0:
            raise RuntimeError(f"kafka-configs could not create the user {user}: {made.stderr[-2000:]}")

    def rss_bytes(self) -> int | None:
        """The broker process's resident memory (VmRSS), for the docs' figures."""
        with suppress(OSError, ValueError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return None

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL past the bound) and remove its storage."""
        process, self._process = self._process, None
        terminate(process, STOP_TIMEOUT_S)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def log_tail(self, size: int = 4000) -> str:
        if self.folder is None:
            return ""
        text = ""
        for name in ("stdout.log", "server.log"):
            with suppress(OSError):
                text += (self.folder / name).read_text(errors="replace")[-size:]
        return text[-size:]

    def __enter__(self) -> ApacheKafka:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def lag_table(output: str) -> Sequence[dict[str, str]]:
    """The rows of `kafka-consumer-groups --describe` (GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...)."""
    lines = [line.split() for line in output.splitlines() if line.strip()]
    header = next((line for line in lines if line[:2] == ["GROUP", "TOPIC"]), None)
    if header is None:
        return []
    return [dict(zip(header, line, strict=False)) for line in lines[lines.index(header) + 1:]
            if len(line) >= len(header) - 3]

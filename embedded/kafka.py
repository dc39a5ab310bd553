"""A real Apache Kafka broker (KRaft, single node, 127.0.0.1) from its Maven Central jars.

Used by the CLI (`cloudarb demo`, `cloudarb kafka start`) and by the pytest fixture, so both run the
same broker the same way. The version is pinned in `infra/kafka/pom.xml`; `fetch_jars()` resolves it
with Maven into `.cache/kafka/libs` once.

`KAFKA_BOOTSTRAP_SERVERS` set means "use that cluster instead": `kafka_cluster()` then starts nothing.

Failures a user can fix (no Java, no Maven, port in use, broker never ready) raise `KafkaSetupError`
with one line saying what to do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedded.children import die_with_parent
from schemas.kafka import client_config
from schemas.topics import TOPICS, TopicSpec

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra" / "kafka"
DEFAULT_CACHE = ROOT / ".cache" / "kafka"


class KafkaSetupError(RuntimeError):
    """A set-up problem the user can fix; the message says how."""


def kafka_version() -> str:
    import re

    m = re.search(r"<kafka.version>([^<]+)</kafka.version>", (INFRA / "pom.xml").read_text())
    assert m, "infra/kafka/pom.xml must pin kafka.version"
    return m.group(1)


def _need(cmd: str, hint: str) -> str:
    path = shutil.which(cmd)
    if not path:
        raise KafkaSetupError(f"`{cmd}` not found on PATH: {hint}")
    return path


def libs_dir(cache: Path = DEFAULT_CACHE) -> Path:
    return cache / f"libs-{kafka_version()}"


def fetch_jars(cache: Path = DEFAULT_CACHE) -> Path:
    """Resolve the pinned broker jars with Maven (once); returns the jar directory."""
    libs = libs_dir(cache)
    marker = libs / ".complete"
    if marker.exists():
        return libs
    mvn = _need("mvn", "install Maven (apt-get install maven) or set KAFKA_BOOTSTRAP_SERVERS to a running cluster")
    libs.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [mvn, "-q", "-B", "-f", str(INFRA / "pom.xml"), "dependency:copy-dependencies",
         f"-DoutputDirectory={libs}"],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0 or not list(libs.glob("kafka_2.13-*.jar")):
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        raise KafkaSetupError(
            "Maven could not fetch the Kafka broker jars (is Maven Central reachable?): " + " | ".join(tail)
        )
    marker.write_text(kafka_version())
    return libs


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalKafka:
    """One broker process. `data_dir` is kept between runs unless `wipe()`d.

    >>> k = LocalKafka(Path("/tmp/x"), port=39092)   # doctest: +SKIP
    >>> k.start(); k.ensure_topics(); k.stop()       # doctest: +SKIP
    """

    data_dir: Path
    port: int | None = None
    controller_port: int | None = None
    heap: str = "512m"
    cache: Path = DEFAULT_CACHE
    # {user: password}: the client listener takes only SASL/PLAIN logins of these users (SASL_PLAINTEXT; the
    # first user is the broker's own), as a secured cluster does; None: a plaintext listener
    sasl_users: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _java(self) -> str:
        java = _need("java", "install Java 17+ (apt-get install openjdk-17-jre-headless)")
        out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
        import re

        m = re.search(r'version "(\d+)', out)
        if m and int(m.group(1)) < 17:
            raise KafkaSetupError(f"Kafka {kafka_version()} needs Java 17+, found {m.group(1)}: set JAVA_HOME/PATH")
        return java

    def _ports(self) -> None:
        if self.port is None:
            self.port = free_port()
        elif not port_free(self.port):
            raise KafkaSetupError(
                f"port {self.port} is in use on 127.0.0.1: stop what holds it (`ss -ltnp | grep {self.port}`) "
                "or choose another with --kafka-port"
            )
        if self.controller_port is None:
            self.controller_port = free_port()
            while self.controller_port == self.port:
                self.controller_port = free_port()

    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tmpl = (INFRA / "server.properties.template").read_text()
        cfg = self.data_dir / "server.properties"
        text = tmpl.format(port=self.port, controller_port=self.controller_port, log_dir=self.data_dir / "log")
        if self.sasl_users:   # (a later line of a properties file overrides an earlier one)
            (user, password), *_ = self.sasl_users.items()
            logins = " ".join(f'user_{u}="{p}"' for u, p in self.sasl_users.items())
            text += (
                f"listeners=SASL_PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}\n"
                f"advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{self.port}\n"
                "inter.broker.listener.name=SASL_PLAINTEXT\n"
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT\n"
                "sasl.enabled.mechanisms=PLAIN\nsasl.mechanism.inter.broker.protocol=PLAIN\n"
                "listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain."
                f'PlainLoginModule required username="{user}" password="{password}" {logins};\n')
        cfg.write_text(text)
        return cfg

    def client_security(self) -> dict[str, str]:
        """The librdkafka settings a client of this broker needs (as its first SASL user, if any)."""
        if not self.sasl_users:
            return {}
        (user, password), *_ = self.sasl_users.items()
        return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": user,
                "sasl.password": password}

    def _jvm(self, java: str, libs: Path, main: str, *args: str) -> list[str]:
        return [java, f"-Xmx{self.heap}", "-Xms128m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={INFRA / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={self.data_dir}", "-cp", f"{libs}/*", main, *args]

    def start(self, timeout_s: float = 90.0) -> LocalKafka:
        java = self._java()
        libs = fetch_jars(self.cache)
        self._ports()
        cfg = self._write_config()
        if not (self.data_dir / "log" / "meta.properties").exists():
            cluster_id = (self.data_dir / "cluster.id")
            if not cluster_id.exists():
                cluster_id.write_text(_kraft_uuid())
            fmt = subprocess.run(
                # `--cluster-id=` form: a base64 id may start with '-', which argparse would take for an option
                self._jvm(java, libs, "kafka.tools.StorageTool", "format",
                          f"--cluster-id={cluster_id.read_text().strip()}", "-c", str(cfg), "--ignore-formatted"),
                capture_output=True, text=True, check=False,
            )
            if fmt.returncode != 0:
                raise KafkaSetupError(f"formatting the Kafka data dir {self.data_dir} failed: "
                                      f"{fmt.stderr.strip().splitlines()[-1:] or fmt.stdout}; wipe it and retry")
        # Its own session: a terminal's Ctrl-C reaches only us, and we stop the broker after what uses it.
        # die_with_parent: SIGTERM to the broker when this process dies, even by SIGKILL (Linux)
        with open(self.data_dir / "stdout.log", "ab") as out:
            self.proc = subprocess.Popen(
                die_with_parent(self._jvm(java, libs, "kafka.Kafka", str(cfg))),
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        (self.data_dir / "broker.pid").write_text(str(self.proc.pid))
        try:
            self.wait_ready(timeout_s)
        except BaseException:  # not ready, Ctrl-C or SIGTERM while starting: leave no broker behind
            self.stop()
            raise
        return self

    def wait_ready(self, timeout_s: float) -> None:
        from confluent_kafka.admin import AdminClient

        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "log_level": 0, "logger": _QuietLogger(),
                                **self.client_security()}
        admin = AdminClient(conf)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise KafkaSetupError(
                    f"the Kafka broker exited with code {self.proc.returncode} during start: "
                    f"see {self.data_dir / 'server.log'} and {self.data_dir / 'stdout.log'}"
                )
            try:
                md = admin.list_topics(timeout=2)
                if md.brokers:
                    return
            except Exception:
                pass
            time.sleep(0.3)
        self.stop()
        raise KafkaSetupError(f"the Kafka broker did not become ready in {timeout_s:.0f}s: "
                              f"see {self.data_dir / 'server.log'}")

    def ensure_topics(self, specs: Iterable[TopicSpec] = TOPICS.values()) -> None:
        ensure_topics(self.bootstrap, specs)

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the broker (for failure tests)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def wipe(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


class _QuietLogger:
    def log(self, *args: object, **kwargs: object) -> None:
        pass


def _kraft_uuid() -> str:
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec] = TOPICS.values(), timeout_s: float = 30) -> None:
    """Create the topics that don't exist yet, with their partition counts (idempotent)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(client_config(bootstrap))
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    new = []
    for s in specs:
        if s.name in existing:
            continue
        cfg = {"retention.ms": str(s.retention_ms)}
        if s.compacted:
            cfg["cleanup.policy"] = "compact"
        new.append(NewTopic(s.name, num_partitions=s.partitions, replication_factor=1, config=cfg))
    if not new:
        return
    for name, fut in admin.create_topics(new, operation_timeout=timeout_s).items():
        try:
            fut.result(timeout_s)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise KafkaSetupError(f"could not create topic {name}: {exc}") from None
    # wait until every partition has a leader, so the first produce/offset query doesn't fail
    import time

    deadline = time.monotonic() + timeout_s
    names = {t.topic for t in new}
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=timeout_s).topics
        if all(n in md and md[n].partitions and all(p.leader >= 0 and not p.error for p in md[n].partitions.values())
               for n in names) and _offsets_served(bootstrap, {n: len(md[n].partitions) for n in names}):
            return
        time.sleep(0.2)
    raise KafkaSetupError(f"topics {sorted(names)} have no partition leaders after {timeout_s:.0f}s")


def _offsets_served(bootstrap: str, partitions: dict[str, int]) -> bool:
    """True once the broker answers ListOffsets for every partition (it may lag the metadata)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    c = Consumer({**client_config(bootstrap), "group.id": "cloudarb-probe"})
    try:
        for t, n in partitions.items():
            for p in range(n):
                c.get_watermark_offsets(TopicPartition(t, p), timeout=5)
        return True
    except KafkaException:
        return False
    finally:
        c.close()


@contextlib.contextmanager
def kafka_cluster(data_dir: Path, port: int | None = None, create_topics: bool = True) -> Iterator[str]:
    """Yield a bootstrap address: `KAFKA_BOOTSTRAP_SERVERS` if set, else a local broker we start and stop."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        if create_topics:
            ensure_topics(external)
        yield external
        return
    broker = LocalKafka(data_dir, port=port)
    try:
        broker.start()
        if create_topics:
            broker.ensure_topics()
        yield broker.bootstrap
    finally:
        broker.stop()

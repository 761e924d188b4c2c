"""The local stack's two Java servers: a single-node Kafka broker (KRaft) and S3Proxy (filesystem backend).

Their jars come from Maven Central, fetched once with ``mvn dependency:copy-dependencies`` (POMs in
``stack/kafka`` and ``stack/s3proxy``) into ``.cache/stack/``. They run detached and are stopped by PID
(``processes.py``); ``start_*`` return once the server answers (Kafka a Metadata request listing the
broker, S3 an HTTP request), ``stop_*`` keep the data. Standard library only.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from processes import Daemon, alive, stop
from stackconfig import (CACHE_DIR, HOST, LOG_DIR, REPO_ROOT, STACK_SRC, STATE_DIR, kafka_bootstrap,
                         kafka_sasl_bootstrap, port, ready_timeout, s3_credentials, s3_endpoint, sasl_credentials)

__all__ = ["KAFKA", "S3", "Server", "classpath", "kafka_answers", "s3_answers", "say", "start_kafka", "start_s3",
           "stop_server"]


def say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


@dataclass(frozen=True)
class Server:
    daemon: Daemon
    stop_timeout: float

    @property
    def name(self) -> str:
        return self.daemon.name


def _server(name: str, main_class: str, stop_timeout: float) -> Server:
    return Server(Daemon(name, main_class, STATE_DIR / f"{name}.pid", STATE_DIR), stop_timeout)


KAFKA = _server("kafka", "kafka.Kafka", 30.0)
S3 = _server("s3", "org.gaul.s3proxy.Main", 10.0)


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """Serialises start/stop across processes (a test and `make stack-up` may race)."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / "stack.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def stop_server(server: Server, force: bool) -> None:
    """SIGTERM (SIGKILL after the server's timeout; ``force``: at once, like a crash); data stays."""
    with _lock():
        pid = server.daemon.pid()
        if pid is None:
            say(f"{server.name}: not running")
            return
        began = time.monotonic()
        say(f"{server.name}: stopping (pid {pid}, {'SIGKILL' if force else 'SIGTERM'})")
        killed = stop(pid, 0 if force else server.stop_timeout)
        server.daemon.pid_file.unlink(missing_ok=True)
        say(f"{server.name}: stopped in {time.monotonic() - began:.1f}s" + (" (SIGKILL)" if killed else ""))


def _wait_ready(server: Server, pid: int, probe: Callable[[], bool]) -> None:
    timeout = ready_timeout()
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if not alive(pid):
            server.daemon.pid_file.unlink(missing_ok=True)
            raise RuntimeError(f"{server.name} exited during start-up\n{_logs_tail(server)}")
        if probe():
            say(f"{server.name}: ready in {time.monotonic() - began:.1f}s (pid {pid})")
            return
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready after {timeout:.0f}s\n{_logs_tail(server)}")


def _logs_tail(server: Server, lines: int = 20) -> str:
    """The end of the server's log and of its stdout/stderr (where the JVM reports start-up failures)."""
    parts = []
    for path in (LOG_DIR / f"{server.name}.log", LOG_DIR / f"{server.name}.out"):
        with contextlib.suppress(OSError):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            if text:
                parts.append(f"--- {path}\n" + "\n".join(text))
    return "\n".join(parts) or f"(no output in {LOG_DIR})"


def _check_ports_free(server: Server, ports: list[int]) -> None:
    def taken(number: int) -> bool:
        with contextlib.suppress(OSError), socket.create_connection((HOST, number), timeout=0.5):
            return True
        return False

    if busy := [number for number in ports if taken(number)]:
        raise RuntimeError(
            f"cannot start {server.name}: port(s) {busy} on {HOST} already in use by a process this "
            "checkout did not start; stop it or choose other DESKGEN_STACK_*_PORT values")


# --- jars ---------------------------------------------------------------------------------------


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise RuntimeError("java not found: install a Java 17+ runtime (Debian: openjdk-17-jre-headless)")
    return java


def classpath(component: str) -> str:
    """Fetches the jars of ``stack/<component>/pom.xml`` once (again when the POM changes)."""
    pom = STACK_SRC / component / "pom.xml"
    lib = CACHE_DIR / component / "lib"
    stamp = lib / ".pom-sha256"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    if not (stamp.exists() and stamp.read_text() == digest):
        mvn = shutil.which("mvn")
        if not mvn:
            raise RuntimeError("mvn not found: install Maven (Debian: maven)")
        say(f"{component}: fetching jars with Maven into {lib.relative_to(REPO_ROOT)} (first run only)")
        staging = lib.with_name("lib.partial")
        shutil.rmtree(staging, ignore_errors=True)
        began = time.monotonic()
        fetch = subprocess.run(
            [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={staging}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        if fetch.returncode != 0:
            raise RuntimeError(f"Maven could not fetch the {component} jars:\n{fetch.stdout[-4000:]}")
        (staging / ".pom-sha256").write_text(digest)
        shutil.rmtree(lib, ignore_errors=True)
        staging.rename(lib)
        say(f"{component}: {len(list(lib.glob('*.jar')))} jars fetched in {time.monotonic() - began:.1f}s")
    return f"{lib}/*"


# --- Kafka --------------------------------------------------------------------------------------

_KAFKA_DIR = STATE_DIR / "kafka"


def _kafka_properties() -> str:
    user, password = sasl_credentials()
    for value in (user, password):
        if any(char in value for char in '"\\\n'):
            raise ValueError('SASL user and password must not contain ", \\ or newlines')
    plain, sasl, controller = port("kafka"), port("kafka-sasl"), port("controller")
    properties = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller}",
        "listeners": f"PLAINTEXT://{HOST}:{plain},SASL_PLAINTEXT://{HOST}:{sasl},CONTROLLER://{HOST}:{controller}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{plain},SASL_PLAINTEXT://{HOST}:{sasl}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config":
            f'org.apache.kafka.common.security.plain.PlainLoginModule required user_{user}="{password}";',
        "log.dirs": str(_KAFKA_DIR / "data"),
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        # One node: every internal topic has one replica, so transactions and groups work.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Fewer internal partitions than the default 50: creating them is most of the first
        # group join or transaction on a 2-core machine.
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.num.partitions": "8",
        "group.initial.rebalance.delay.ms": "0",
        # After a kill -9 the restarted node must wait out its old registration's session before
        # it is unfenced (default 9 s); 4 s keeps crash tests quick with margin for a busy machine.
        "broker.session.timeout.ms": "4000",
        "broker.heartbeat.interval.ms": "500",
        # Lets crash tests use short consumer session timeouts (broker default minimum: 6 s).
        "group.min.session.timeout.ms": "1000",
    }
    return "".join(f"{key}={value}\n" for key, value in properties.items())


def _cluster_id() -> str:
    """A random Kafka cluster id (base64url of a UUID), made once and kept with the data."""
    path = _KAFKA_DIR / "cluster.id"
    if path.exists():
        return path.read_text().strip()
    while True:  # Kafka's own generator skips ids that would read as a command-line flag
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            break
    path.write_text(cluster_id + "\n")
    return cluster_id


def kafka_answers() -> bool:
    """True when the broker answers a Metadata request (v4) listing at least one live broker."""
    client_id = b"deskgen-localstack"
    header = struct.pack(">hhih", 3, 4, 1, len(client_id)) + client_id
    body = struct.pack(">i?", -1, False)  # all topics, no auto-creation
    request = header + body
    try:
        with socket.create_connection((HOST, port("kafka")), timeout=2.0) as conn:
            conn.settimeout(5.0)
            conn.sendall(struct.pack(">i", len(request)) + request)
            size = struct.unpack(">i", _recv_exactly(conn, 4))[0]
            response = _recv_exactly(conn, size)
    except (OSError, struct.error):
        return False
    correlation_id, _throttle_ms, brokers = struct.unpack_from(">iii", response)
    return correlation_id == 1 and brokers > 0


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return bytes(data)


def start_kafka() -> None:
    """Starts the broker unless it runs already; returns once it serves metadata."""
    with _lock():
        pid = KAFKA.daemon.pid()
        if pid is None:
            _check_ports_free(KAFKA, [port("kafka"), port("kafka-sasl"), port("controller")])
            jvm = [_java()]
            jars = classpath("kafka")
            _KAFKA_DIR.mkdir(parents=True, exist_ok=True)
            config = _KAFKA_DIR / "server.properties"
            config.write_text(_kafka_properties())
            # Log4j's own shutdown hook would stop logging before Kafka's shutdown has finished.
            jvm += ["-cp", jars, f"-Dlog4j2.configurationFile={STACK_SRC / 'kafka' / 'log4j2.xml'}",
                    "-Dlog4j2.shutdownHookEnabled=false", f"-Ddeskgen.stack.logs={LOG_DIR}"]
            if not (_KAFKA_DIR / "data" / "meta.properties").exists():
                say("kafka: formatting storage")
                subprocess.run(
                    [*jvm, "-Xmx256m", "kafka.tools.StorageTool", "format", "--config", str(config),
                     "--cluster-id", _cluster_id(), "--ignore-formatted"],
                    check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                )
            say(f"kafka: starting on {kafka_bootstrap()} (SASL {kafka_sasl_bootstrap()})")
            pid = KAFKA.daemon.spawn([*jvm, "-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                                      "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
                                      "kafka.Kafka", str(config)], LOG_DIR / "kafka.out")
        _wait_ready(KAFKA, pid, kafka_answers)


# --- S3 -----------------------------------------------------------------------------------------

_S3_DIR = STATE_DIR / "s3"


def s3_answers() -> bool:
    try:
        urllib.request.urlopen(f"http://{s3_endpoint()}/", timeout=2.0).close()
    except urllib.error.HTTPError:  # anonymous requests are refused (403): the server is up
        return True
    except OSError:
        return False
    return True


def start_s3() -> None:
    """Starts the S3 server (S3Proxy, filesystem backend) unless it runs already; returns once it answers."""
    with _lock():
        pid = S3.daemon.pid()
        if pid is None:
            _check_ports_free(S3, [port("s3")])
            java = _java()
            jars = classpath("s3proxy")
            access_key, secret_key = s3_credentials()
            (_S3_DIR / "data").mkdir(parents=True, exist_ok=True)
            config = _S3_DIR / "s3proxy.properties"
            config.write_text(
                f"s3proxy.endpoint=http://{s3_endpoint()}\n"
                "s3proxy.authorization=aws-v2-or-v4\n"
                f"s3proxy.identity={access_key}\n"
                f"s3proxy.credential={secret_key}\n"
                "jclouds.provider=filesystem\n"
                f"jclouds.filesystem.basedir={_S3_DIR / 'data'}\n"
            )
            config.chmod(0o600)
            say(f"s3: starting on {s3_endpoint()}")
            # C1 JIT and serial GC: S3Proxy is start-up bound here, not throughput bound.
            pid = S3.daemon.spawn([java, "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
                                   "-XX:+ExitOnOutOfMemoryError", "-cp", jars,
                                   f"-Dlogback.configurationFile={STACK_SRC / 's3proxy' / 'logback.xml'}",
                                   f"-Ddeskgen.stack.logs={LOG_DIR}",
                                   "org.gaul.s3proxy.Main", "--properties", str(config)], LOG_DIR / "s3.out")
        _wait_ready(S3, pid, s3_answers)

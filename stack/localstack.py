#!/usr/bin/env python3
"""The local stack: a single-node Apache Kafka broker (KRaft) and an S3 server, on 127.0.0.1.

Usage: ``python3.11 stack/localstack.py up|down|status|env|start-kafka|stop-kafka|start-s3|stop-s3``.
Importable from tests (``sys.path.insert(0, "stack"); import localstack``). Standard library only,
so it runs before the project's virtual environment exists.

- Kafka 4.x and S3Proxy run on Java 17; their jars come from Maven Central, fetched once with
  ``mvn dependency:copy-dependencies`` (POMs in ``stack/kafka`` and ``stack/s3proxy``) into
  ``.cache/stack/``.
- Everything the servers write (data, logs, PID files, generated configs) lives in ``.stack/``.
  ``down`` and ``stop_*`` keep the data, so a restart sees the same topics, offsets and objects.
- Servers run detached (own session) and survive the calling shell; they are stopped by PID,
  SIGTERM first and SIGKILL after a timeout.
- Every command is idempotent and returns only once the server answers: Kafka a Metadata request
  listing the broker, S3 an HTTP request.

Environment (read at call time; defaults in brackets): DESKGEN_STACK_KAFKA_PORT [19092] (PLAINTEXT),
DESKGEN_STACK_KAFKA_SASL_PORT [19094] (SASL_PLAINTEXT, SASL/PLAIN), DESKGEN_STACK_CONTROLLER_PORT
[19093], DESKGEN_STACK_SASL_USER [deskgen], DESKGEN_STACK_SASL_PASSWORD [deskgen-sasl-secret],
DESKGEN_STACK_S3_PORT [19000], DESKGEN_STACK_S3_ACCESS_KEY [deskgen], DESKGEN_STACK_S3_SECRET_KEY
[deskgen-local-secret], DESKGEN_STACK_TIMEOUT [120] (seconds to wait for readiness),
JAVA_HOME (else ``java`` on PATH).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

__all__ = [
    "Credentials",
    "deskgen_env",
    "down",
    "kafka_bootstrap",
    "kafka_sasl_bootstrap",
    "s3_credentials",
    "s3_endpoint",
    "sasl_credentials",
    "start_kafka",
    "start_s3",
    "status",
    "stop_kafka",
    "stop_s3",
    "up",
]

HOST = "127.0.0.1"
STACK_SRC = Path(__file__).resolve().parent
REPO_ROOT = STACK_SRC.parent
STATE_DIR = REPO_ROOT / ".stack"
LOG_DIR = STATE_DIR / "logs"
CACHE_DIR = REPO_ROOT / ".cache" / "stack"


class Credentials(NamedTuple):
    user: str
    password: str


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def _port(name: str, default: int) -> int:
    raw = _env(name, str(default))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{name}={raw!r} is not a TCP port")
    return int(raw)


def kafka_bootstrap() -> str:
    """Bootstrap servers of the PLAINTEXT listener, e.g. ``127.0.0.1:19092``."""
    return f"{HOST}:{_port('DESKGEN_STACK_KAFKA_PORT', 19092)}"


def kafka_sasl_bootstrap() -> str:
    """Bootstrap servers of the SASL_PLAINTEXT (SASL/PLAIN) listener, e.g. ``127.0.0.1:19094``."""
    return f"{HOST}:{_port('DESKGEN_STACK_KAFKA_SASL_PORT', 19094)}"


def sasl_credentials() -> Credentials:
    """The one SASL/PLAIN user the broker accepts on its SASL listener."""
    return Credentials(
        _env("DESKGEN_STACK_SASL_USER", "deskgen"),
        _env("DESKGEN_STACK_SASL_PASSWORD", "deskgen-sasl-secret"),
    )


def s3_endpoint() -> str:
    """``host:port`` of the S3 server (plain HTTP, path-style), e.g. ``127.0.0.1:19000``."""
    return f"{HOST}:{_port('DESKGEN_STACK_S3_PORT', 19000)}"


def s3_credentials() -> Credentials:
    """Access key and secret key of the S3 server."""
    return Credentials(
        _env("DESKGEN_STACK_S3_ACCESS_KEY", "deskgen"),
        _env("DESKGEN_STACK_S3_SECRET_KEY", "deskgen-local-secret"),
    )


def deskgen_env() -> dict[str, str]:
    """The DESKGEN_* client settings that point the services at this stack."""
    s3 = s3_credentials()
    return {"DESKGEN_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap(), "DESKGEN_S3_ENDPOINT": s3_endpoint(),
            "DESKGEN_S3_ACCESS_KEY": s3.user, "DESKGEN_S3_SECRET_KEY": s3.password}


def _say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


# --- processes ----------------------------------------------------------------------------------

# Servers started by this process, kept so they can be reaped (no zombies, no ResourceWarning).
_children: dict[int, subprocess.Popen] = {}


@dataclass(frozen=True)
class _Server:
    name: str
    main_class: str  # also identifies the process in /proc/<pid>/cmdline
    stop_timeout: float

    @property
    def pid_file(self) -> Path:
        return STATE_DIR / f"{self.name}.pid"

    def pid(self) -> int | None:
        """PID of this server if it is running, else None (a stale PID file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if _alive(pid) and self._is_ours(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def _is_ours(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return self.main_class.encode() in cmdline and any(str(STATE_DIR).encode() in arg for arg in cmdline)


_KAFKA = _Server("kafka", "kafka.Kafka", stop_timeout=30.0)
_S3 = _Server("s3", "org.gaul.s3proxy.Main", stop_timeout=10.0)


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _children[pid]
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _spawn(server: _Server, argv: list[str]) -> int:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOG_DIR / f"{server.name}.out", "ab") as out:
        child = subprocess.Popen(
            argv, cwd=STATE_DIR, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[child.pid] = child
    server.pid_file.write_text(f"{child.pid}\n")
    return child.pid


def _stop(server: _Server, force: bool) -> None:
    with _lock():
        pid = server.pid()
        if pid is None:
            _say(f"{server.name}: not running")
            return
        began = time.monotonic()
        if not force:
            _say(f"{server.name}: stopping (pid {pid}, SIGTERM)")
            os.kill(pid, signal.SIGTERM)
            deadline = began + server.stop_timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        if _alive(pid):
            _say(f"{server.name}: {'killing' if force else 'still running, killing'} (pid {pid}, SIGKILL)")
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        server.pid_file.unlink(missing_ok=True)
        _say(f"{server.name}: stopped in {time.monotonic() - began:.1f}s")


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """Serialises start/stop across processes (a test and `make stack-up` may race)."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / "stack.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _wait_ready(server: _Server, pid: int, probe: Callable[[], bool]) -> None:
    timeout = float(_env("DESKGEN_STACK_TIMEOUT", "120"))
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if not _alive(pid):
            server.pid_file.unlink(missing_ok=True)
            raise RuntimeError(f"{server.name} exited during start-up\n{_logs_tail(server)}")
        if probe():
            _say(f"{server.name}: ready in {time.monotonic() - began:.1f}s (pid {pid})")
            return
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready after {timeout:.0f}s\n{_logs_tail(server)}")


def _logs_tail(server: _Server, lines: int = 20) -> str:
    """The end of the server's log and of its stdout/stderr (where the JVM reports start-up failures)."""
    parts = []
    for path in (LOG_DIR / f"{server.name}.log", LOG_DIR / f"{server.name}.out"):
        with contextlib.suppress(OSError):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            if text:
                parts.append(f"--- {path}\n" + "\n".join(text))
    return "\n".join(parts) or f"(no output in {LOG_DIR})"


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
        return True
    return False


def _check_ports_free(server: _Server, ports: list[int]) -> None:
    taken = [port for port in ports if _port_open(port)]
    if taken:
        raise RuntimeError(
            f"cannot start {server.name}: port(s) {taken} on {HOST} already in use by a process this "
            "checkout did not start; stop it or choose other DESKGEN_STACK_*_PORT values"
        )


# --- jars ---------------------------------------------------------------------------------------


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise RuntimeError("java not found: install a Java 17+ runtime (Debian: openjdk-17-jre-headless)")
    return java


def _classpath(component: str) -> str:
    """Fetches the jars of ``stack/<component>/pom.xml`` once (again when the POM changes)."""
    pom = STACK_SRC / component / "pom.xml"
    lib = CACHE_DIR / component / "lib"
    stamp = lib / ".pom-sha256"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    if not (stamp.exists() and stamp.read_text() == digest):
        mvn = shutil.which("mvn")
        if not mvn:
            raise RuntimeError("mvn not found: install Maven (Debian: maven)")
        _say(f"{component}: fetching jars with Maven into {lib.relative_to(REPO_ROOT)} (first run only)")
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
        _say(f"{component}: {len(list(lib.glob('*.jar')))} jars fetched in {time.monotonic() - began:.1f}s")
    return f"{lib}/*"


# --- Kafka --------------------------------------------------------------------------------------

_KAFKA_DIR = STATE_DIR / "kafka"


def _kafka_properties() -> str:
    plain = _port("DESKGEN_STACK_KAFKA_PORT", 19092)
    sasl = _port("DESKGEN_STACK_KAFKA_SASL_PORT", 19094)
    controller = _port("DESKGEN_STACK_CONTROLLER_PORT", 19093)
    user, password = sasl_credentials()
    for value in (user, password):
        if any(char in value for char in '"\\\n'):
            raise ValueError('SASL user and password must not contain ", \\ or newlines')
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


def _kafka_metadata_ok(port: int) -> bool:
    """True when the broker answers a Metadata request (v4) listing at least one live broker."""
    client_id = b"deskgen-localstack"
    header = struct.pack(">hhih", 3, 4, 1, len(client_id)) + client_id
    body = struct.pack(">i?", -1, False)  # all topics, no auto-creation
    request = header + body
    try:
        with socket.create_connection((HOST, port), timeout=2.0) as conn:
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
        pid = _KAFKA.pid()
        plain = _port("DESKGEN_STACK_KAFKA_PORT", 19092)
        if pid is None:
            _check_ports_free(_KAFKA, [plain, _port("DESKGEN_STACK_KAFKA_SASL_PORT", 19094),
                                       _port("DESKGEN_STACK_CONTROLLER_PORT", 19093)])
            jvm = [_java()]
            classpath = _classpath("kafka")
            _KAFKA_DIR.mkdir(parents=True, exist_ok=True)
            config = _KAFKA_DIR / "server.properties"
            config.write_text(_kafka_properties())
            # Log4j's own shutdown hook would stop logging before Kafka's shutdown has finished.
            jvm += ["-cp", classpath, f"-Dlog4j2.configurationFile={STACK_SRC / 'kafka' / 'log4j2.xml'}",
                   "-Dlog4j2.shutdownHookEnabled=false", f"-Ddeskgen.stack.logs={LOG_DIR}"]
            if not (_KAFKA_DIR / "data" / "meta.properties").exists():
                _say("kafka: formatting storage")
                subprocess.run(
                    [*jvm, "-Xmx256m", "kafka.tools.StorageTool", "format", "--config", str(config),
                     "--cluster-id", _cluster_id(), "--ignore-formatted"],
                    check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                )
            _say(f"kafka: starting on {kafka_bootstrap()} (SASL {kafka_sasl_bootstrap()})")
            pid = _spawn(_KAFKA, [*jvm, "-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                                  "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
                                  "kafka.Kafka", str(config)])
        _wait_ready(_KAFKA, pid, lambda: _kafka_metadata_ok(plain))


def stop_kafka(force: bool = False) -> None:
    """Stops the broker (SIGTERM, SIGKILL after 30 s; ``force`` kills at once, like a crash).

    The data stays: the next start recovers the same topics, offsets and transactions.
    """
    _stop(_KAFKA, force)


# --- S3 -----------------------------------------------------------------------------------------

_S3_DIR = STATE_DIR / "s3"


def _s3_answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://{HOST}:{port}/", timeout=2.0).close()
    except urllib.error.HTTPError:  # anonymous requests are refused (403): the server is up
        return True
    except OSError:
        return False
    return True


def start_s3() -> None:
    """Starts the S3 server (S3Proxy, filesystem backend) unless it runs already; returns once it answers."""
    with _lock():
        pid = _S3.pid()
        port = _port("DESKGEN_STACK_S3_PORT", 19000)
        if pid is None:
            _check_ports_free(_S3, [port])
            java = _java()
            classpath = _classpath("s3proxy")
            access_key, secret_key = s3_credentials()
            (_S3_DIR / "data").mkdir(parents=True, exist_ok=True)
            config = _S3_DIR / "s3proxy.properties"
            config.write_text(
                f"s3proxy.endpoint=http://{HOST}:{port}\n"
                "s3proxy.authorization=aws-v2-or-v4\n"
                f"s3proxy.identity={access_key}\n"
                f"s3proxy.credential={secret_key}\n"
                "jclouds.provider=filesystem\n"
                f"jclouds.filesystem.basedir={_S3_DIR / 'data'}\n"
            )
            config.chmod(0o600)
            _say(f"s3: starting on {s3_endpoint()}")
            # C1 JIT and serial GC: S3Proxy is start-up bound here, not throughput bound.
            pid = _spawn(_S3, [java, "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
                               "-XX:+ExitOnOutOfMemoryError", "-cp", classpath,
                               f"-Dlogback.configurationFile={STACK_SRC / 's3proxy' / 'logback.xml'}",
                               f"-Ddeskgen.stack.logs={LOG_DIR}",
                               "org.gaul.s3proxy.Main", "--properties", str(config)])
        _wait_ready(_S3, pid, lambda: _s3_answers(port))


def stop_s3(force: bool = False) -> None:
    """Stops the S3 server (SIGTERM, SIGKILL after 10 s; ``force`` kills at once). Objects stay."""
    _stop(_S3, force)


# --- the whole stack ----------------------------------------------------------------------------


def up() -> None:
    """Starts whatever is not running and waits until everything is ready."""
    start_s3()  # the faster one first: its JVM warms up while Kafka formats and starts
    start_kafka()


def down() -> None:
    """Stops everything that runs; data and logs stay in .stack/."""
    stop_kafka()
    stop_s3()


def status() -> dict[str, dict[str, object]]:
    """Prints and returns, per server: running, answering (ready), PID, address, resident memory."""
    kafka_port, s3_port = _port("DESKGEN_STACK_KAFKA_PORT", 19092), _port("DESKGEN_STACK_S3_PORT", 19000)
    servers = (
        (_KAFKA, f"{kafka_bootstrap()} (SASL {kafka_sasl_bootstrap()})", lambda: _kafka_metadata_ok(kafka_port)),
        (_S3, s3_endpoint(), lambda: _s3_answers(s3_port)),
    )
    report: dict[str, dict[str, object]] = {}
    for server, address, probe in servers:
        pid = server.pid()
        rss = _rss_mib(pid) if pid else None
        ready = pid is not None and probe()
        report[server.name] = {"running": pid is not None, "ready": ready, "pid": pid, "address": address,
                               "rss_mib": rss}
        state = f"{'ready' if ready else 'NOT ANSWERING'}  pid {pid}  {rss:.0f} MiB RSS" if pid else "stopped"
        _say(f"{server.name:<6} {state:<38} {address}")
    _say(f"data and logs: {STATE_DIR}")
    return report


def _print_env() -> None:
    for name, value in deskgen_env().items():
        print(f"export {name}={value}")


_COMMANDS: dict[str, Callable[[], object]] = {
    "up": up, "down": down, "status": status, "env": _print_env,
    "start-kafka": start_kafka, "stop-kafka": stop_kafka,
    "start-s3": start_s3, "stop-s3": stop_s3,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="localstack", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=_COMMANDS)
    command = parser.parse_args(argv).command
    try:
        _COMMANDS[command]()
    except (RuntimeError, ValueError, subprocess.CalledProcessError) as error:
        print(f"[stack] error: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

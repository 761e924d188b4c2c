#!/usr/bin/env python3
"""The local stack: a single-node Apache Kafka broker (KRaft) and an S3 server, on 127.0.0.1.

Usage: ``python3.11 stack/localstack.py up|down|status|env|start-kafka|stop-kafka|start-s3|stop-s3``.
Importable from tests (``sys.path.insert(0, "stack"); import localstack``). Standard library only,
so it runs before the project's virtual environment exists.

- Addresses, credentials and directories: ``stackconfig.py`` (its docstring lists the environment);
  the servers: ``servers.py``; processes and PID files: ``processes.py``.
- Everything the servers write (data, logs, PID files, generated configs) lives in ``.stack/``.
  ``down`` and ``stop_*`` keep the data, so a restart sees the same topics, offsets and objects.
- Servers run detached (own session) and survive the calling shell; they are stopped by PID,
  SIGTERM first and SIGKILL after a timeout.
- Every command is idempotent and returns only once the server answers.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Callable

from processes import rss_mib
from servers import KAFKA, S3, kafka_answers, s3_answers, say, start_kafka, start_s3, stop_server
from stackconfig import (LOG_DIR, STATE_DIR, Credentials, deskgen_env, kafka_bootstrap, kafka_sasl_bootstrap,
                         s3_credentials, s3_endpoint, sasl_credentials)

__all__ = ["Credentials", "LOG_DIR", "deskgen_env", "down", "kafka_bootstrap", "kafka_sasl_bootstrap",
           "s3_credentials", "s3_endpoint", "sasl_credentials", "start_kafka", "start_s3", "status", "stop_kafka",
           "stop_s3", "up"]


def stop_kafka(force: bool = False) -> None:
    """Stops the broker (SIGTERM, SIGKILL after 30 s; ``force`` kills at once, like a crash).

    The data stays: the next start recovers the same topics, offsets and transactions.
    """
    stop_server(KAFKA, force)


def stop_s3(force: bool = False) -> None:
    """Stops the S3 server (SIGTERM, SIGKILL after 10 s; ``force`` kills at once). Objects stay."""
    stop_server(S3, force)


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
    servers = ((KAFKA, f"{kafka_bootstrap()} (SASL {kafka_sasl_bootstrap()})", kafka_answers),
               (S3, s3_endpoint(), s3_answers))
    report: dict[str, dict[str, object]] = {}
    for server, address, probe in servers:
        pid = server.daemon.pid()
        rss = rss_mib(pid) if pid else None
        ready = pid is not None and probe()
        report[server.name] = {"running": pid is not None, "ready": ready, "pid": pid, "address": address,
                               "rss_mib": rss}
        state = f"{'ready' if ready else 'NOT ANSWERING'}  pid {pid}  {rss or 0:.0f} MiB RSS" if pid else "stopped"
        say(f"{server.name:<6} {state:<38} {address}")
    say(f"data and logs: {STATE_DIR}")
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

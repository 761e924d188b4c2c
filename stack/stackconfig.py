"""Where the local stack listens, with which credentials, and where it keeps its files.

Environment (read at call time; defaults in brackets): DESKGEN_STACK_KAFKA_PORT [19092] (PLAINTEXT),
DESKGEN_STACK_KAFKA_SASL_PORT [19094] (SASL_PLAINTEXT, SASL/PLAIN), DESKGEN_STACK_CONTROLLER_PORT
[19093], DESKGEN_STACK_SASL_USER [deskgen], DESKGEN_STACK_SASL_PASSWORD [deskgen-sasl-secret],
DESKGEN_STACK_S3_PORT [19000], DESKGEN_STACK_S3_ACCESS_KEY [deskgen], DESKGEN_STACK_S3_SECRET_KEY
[deskgen-local-secret], DESKGEN_STACK_TIMEOUT [120] (seconds to wait for readiness).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

__all__ = ["CACHE_DIR", "Credentials", "HOST", "LOG_DIR", "REPO_ROOT", "STACK_SRC", "STATE_DIR", "deskgen_env",
           "kafka_bootstrap", "kafka_sasl_bootstrap", "port", "ready_timeout", "s3_credentials", "s3_endpoint",
           "sasl_credentials"]

HOST = "127.0.0.1"
STACK_SRC = Path(__file__).resolve().parent
REPO_ROOT = STACK_SRC.parent
STATE_DIR = REPO_ROOT / ".stack"  # data, logs, PID files, generated configs
LOG_DIR = STATE_DIR / "logs"
CACHE_DIR = REPO_ROOT / ".cache" / "stack"  # the servers' jars

_PORTS = {"kafka": ("DESKGEN_STACK_KAFKA_PORT", 19092), "kafka-sasl": ("DESKGEN_STACK_KAFKA_SASL_PORT", 19094),
          "controller": ("DESKGEN_STACK_CONTROLLER_PORT", 19093), "s3": ("DESKGEN_STACK_S3_PORT", 19000)}


class Credentials(NamedTuple):
    user: str
    password: str


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def port(listener: str) -> int:
    """The TCP port of ``kafka``, ``kafka-sasl``, ``controller`` or ``s3``."""
    name, default = _PORTS[listener]
    raw = _env(name, str(default))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{name}={raw!r} is not a TCP port")
    return int(raw)


def ready_timeout() -> float:
    return float(_env("DESKGEN_STACK_TIMEOUT", "120"))


def kafka_bootstrap() -> str:
    """Bootstrap servers of the PLAINTEXT listener, e.g. ``127.0.0.1:19092``."""
    return f"{HOST}:{port('kafka')}"


def kafka_sasl_bootstrap() -> str:
    """Bootstrap servers of the SASL_PLAINTEXT (SASL/PLAIN) listener, e.g. ``127.0.0.1:19094``."""
    return f"{HOST}:{port('kafka-sasl')}"


def sasl_credentials() -> Credentials:
    """The one SASL/PLAIN user the broker accepts on its SASL listener."""
    return Credentials(_env("DESKGEN_STACK_SASL_USER", "deskgen"), _env("DESKGEN_STACK_SASL_PASSWORD", "deskgen-sasl-secret"))


def s3_endpoint() -> str:
    """``host:port`` of the S3 server (plain HTTP, path-style), e.g. ``127.0.0.1:19000``."""
    return f"{HOST}:{port('s3')}"


def s3_credentials() -> Credentials:
    """Access key and secret key of the S3 server."""
    return Credentials(_env("DESKGEN_STACK_S3_ACCESS_KEY", "deskgen"),
                       _env("DESKGEN_STACK_S3_SECRET_KEY", "deskgen-local-secret"))


def deskgen_env() -> dict[str, str]:
    """The DESKGEN_* client settings that point the services at this stack."""
    s3 = s3_credentials()
    return {"DESKGEN_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap(), "DESKGEN_S3_ENDPOINT": s3_endpoint(),
            "DESKGEN_S3_ACCESS_KEY": s3.user, "DESKGEN_S3_SECRET_KEY": s3.password}

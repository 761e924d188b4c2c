"""Settings shared by every service, read from ``DESKGEN_*`` environment variables once at start.

Secrets are ``SecretStr`` so they never print; they may also come from files in a mounted
secrets folder (``DESKGEN_SECRETS_DIR``, one file per variable name in lower case).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path
from typing import TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from .errors import FatalError
from .topology import event_kinds

__all__ = ["KafkaSettings", "S3Settings", "RuntimeSettings", "ImageSettings", "StageSettings", "load", "describe"]


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, extra="ignore", case_sensitive=False)


class KafkaSettings(BaseSettings):
    """Kafka connection; security settings pass through to librdkafka."""

    model_config = _config("DESKGEN_KAFKA_")

    bootstrap_servers: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers, comma separated.")
    security_protocol: str | None = Field(None, description="librdkafka security.protocol: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL.")
    sasl_mechanism: str | None = Field(None, description="librdkafka sasl.mechanism, e.g. PLAIN or SCRAM-SHA-512.")
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (secret).")
    ssl_ca_location: str | None = Field(None, description="CA bundle file for TLS.")
    ssl_certificate_location: str | None = Field(None, description="Client certificate for mutual TLS.")
    ssl_key_location: str | None = Field(None, description="Client key for mutual TLS.")
    ssl_key_password: SecretStr | None = Field(None, description="Password of the client key (secret).")
    extra: dict[str, SecretStr] = Field(default_factory=dict, json_schema_extra={"shown_default": "{}"}, description='Any other librdkafka properties, as JSON: {"socket.keepalive.enable": "true"} (values are kept as secrets, never shown).')
    group_prefix: str = Field("deskgen-", description="Consumer group = prefix + stage name.")
    session_timeout_ms: int = Field(45000, ge=1000, description="Consumer session timeout.")
    max_poll_interval_ms: int = Field(300000, ge=1000, description="librdkafka max.poll.interval.ms; long jobs keep polling, so this need not exceed the slowest job.")
    transaction_timeout_ms: int = Field(60000, ge=1000, description="Producer transaction timeout; a crashed instance's open transaction blocks read_committed readers at most this long unless the instance restarts under the same DESKGEN_INSTANCE_ID.")

    def client_config(self) -> dict[str, str]:
        """librdkafka properties common to producers, consumers and the admin client."""
        config: dict[str, str] = {"bootstrap.servers": self.bootstrap_servers}
        passthrough = {
            "security.protocol": self.security_protocol,
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password.get_secret_value() if self.ssl_key_password else None,
        }
        config.update({k: v for k, v in passthrough.items() if v is not None})
        config.update({name: value.get_secret_value() for name, value in self.extra.items()})
        return config


class S3Settings(BaseSettings):
    """Object storage reached through the minio client (any S3 API)."""

    model_config = _config("DESKGEN_S3_")

    endpoint: str = Field("127.0.0.1:19000", description="S3 endpoint as host:port.")
    access_key: SecretStr | None = Field(None, description="S3 access key (secret). Required.")
    secret_key: SecretStr | None = Field(None, description="S3 secret key (secret). Required.")
    bucket: str = Field("deskgen", description="Bucket holding uploads/, generated/ and models/.")
    region: str | None = Field(None, description="S3 region, if the server needs one.")
    secure: bool = Field(False, description="Use HTTPS.")
    timeout_seconds: float = Field(10.0, gt=0, description="Connect and read timeout of one S3 request.")

    def credentials(self) -> tuple[str, str]:
        if self.access_key is None or self.secret_key is None:
            raise FatalError("S3 credentials are missing: set DESKGEN_S3_ACCESS_KEY and DESKGEN_S3_SECRET_KEY "
                             "(or mount them under DESKGEN_SECRETS_DIR)")
        return self.access_key.get_secret_value(), self.secret_key.get_secret_value()


class ImageSettings(BaseSettings):
    """Limits of the shared defensive image decoder."""

    model_config = _config("DESKGEN_IMAGE_")

    max_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Largest accepted upload in bytes.")
    max_pixels: int = Field(40_000_000, gt=0, description="Largest accepted width × height (decompression-bomb guard).")
    max_side: int = Field(12_000, gt=0, description="Largest accepted width or height.")
    max_aspect: float = Field(20.0, ge=1, description="Largest accepted long side / short side.")
    formats: list[str] = Field(default_factory=lambda: ["JPEG", "PNG", "WEBP", "MPO", "HEIF", "AVIF"],
                               description="Accepted formats (Pillow names; HEIF covers HEIC), as JSON list.")


class RuntimeSettings(BaseSettings):
    """The stage runtime: topics, identity, HTTP endpoints, batching, retries, shutdown."""

    model_config = _config("DESKGEN_")

    topic_prefix: str = Field("deskgen.", description=f"Topic names are prefix + {'|'.join(event_kinds())}.")
    instance_id: str = Field(default_factory=socket.gethostname, json_schema_extra={"shown_default": "host name"}, description="Stable id of this instance (pod name); the Kafka transactional id is <group>-<instance_id>, so a restarted instance fences its crashed predecessor at once.")
    http_host: str = Field("127.0.0.1", description="Address of /metrics, /healthz and /readyz (0.0.0.0 in a cluster).")
    http_port: int = Field(8080, ge=0, le=65535, description="Port of /metrics, /healthz and /readyz (0 picks a free one).")
    batch_max: int | None = Field(None, ge=1, le=256, description="Most events handled in one batch and one transaction (default: the stage's own).")
    batch_wait_ms: int = Field(0, ge=0, le=10000, description="How long to wait for more events once one has arrived (0: take only those already waiting).")
    retry_max_attempts: int = Field(10, ge=1, description="Attempts at a job whose dependencies fail transiently, before it ends as failed.")
    retry_base_ms: int = Field(250, ge=1, description="First retry delay; doubles each attempt.")
    retry_max_ms: int = Field(15000, ge=1, description="Longest delay between two attempts.")
    shutdown_grace_seconds: float = Field(30.0, ge=0, description="On SIGTERM, how long the job in hand may take to finish before it is abandoned (and redelivered).")
    max_event_bytes: int = Field(1024 * 1024, gt=0, description="Largest event value accepted; larger ones go to the DLQ.")
    partition_stall_seconds: float = Field(60.0, ge=0, description="An owned partition whose committed records wait this long without being fetched means a stuck Kafka client: the process exits (code 2) so that a fresh consumer takes over; 0 turns the check off.")
    crash_limit: int = Field(5, ge=0, description="An event that was in hand when the process died this many times goes to the DLQ (reason stage_crashed) instead of killing it again; 0 turns the guard off.")
    state_dir: Path = Field(Path(tempfile.gettempdir()) / "deskgen", json_schema_extra={"shown_default": "$TMPDIR/deskgen"}, description="Where the crash ledger lives; it must outlive a container restart (the chart's /tmp emptyDir does).")
    model_cache: Path = Field(Path.home() / ".cache" / "deskgen" / "models", json_schema_extra={"shown_default": "~/.cache/deskgen/models"}, description="Where downloaded models are cached.")
    dev_models: Path = Field(Path(".cache") / "dev-models", description="Where `deskgen models build-dev` writes dev weights.")
    log_level: str = Field("INFO", description="Python log level.")

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix_is_legal(cls, value: str) -> str:
        if not all(c.isalnum() or c in "._-" for c in value):
            raise ValueError("topic prefix may hold only letters, digits, '.', '_' and '-'")
        return value

    def topic(self, kind: str) -> str:
        return f"{self.topic_prefix}{kind}"


class StageSettings(BaseSettings):
    """Base of a stage's own settings section (``DESKGEN_<STAGE>_*``): what every stage process shares."""

    threads: int | None = Field(None, ge=1, le=256, description="CPU threads for inference: torch's, and the classifier's onnxruntime (unset: one per core). Match the pod's CPU limit.")


T = TypeVar("T", bound=BaseSettings)


def load(cls: type[T]) -> T:
    """Read one settings section from the environment; a bad value is a FatalError naming it."""
    secrets_dir = os.environ.get("DESKGEN_SECRETS_DIR")
    try:
        return cls(_secrets_dir=secrets_dir) if secrets_dir else cls()
    except ValidationError as exc:
        problems = "; ".join(f"{cls.model_config['env_prefix']}{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}"
                             for e in exc.errors())
        raise FatalError(f"invalid configuration: {problems}") from None
    except SettingsError as exc:  # a JSON-typed variable (e.g. DESKGEN_KAFKA_EXTRA) that is not JSON
        raise FatalError(f"invalid configuration: {exc}") from None


def describe(cls: type[BaseSettings]) -> list[tuple[str, str, str]]:
    """(variable, default, description) for every field: the README's configuration table."""
    prefix = cls.model_config["env_prefix"]
    rows = []
    for name, field in cls.model_fields.items():
        shown = (field.json_schema_extra or {}).get("shown_default")
        default = shown or field.get_default(call_default_factory=True)
        if isinstance(default, list):
            default = json.dumps(default)
        if isinstance(field.default, SecretStr) or "secret" in (field.description or "") and not shown:
            default = "—" if default is None else "(secret)"
        rows.append((f"{prefix}{name}".upper(), "" if default is None else str(default), field.description or ""))
    return rows

"""Credentials come only from the environment or a mounted secrets folder and are never printed by
the settings objects or `deskgen config` (logs and endpoints of a full run: tests/integration/test_sasl.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deskgen.common.errors import FatalError
from deskgen.common.settings import ImageSettings, KafkaSettings, RuntimeSettings, S3Settings, describe, load

pytestmark = pytest.mark.security

_SASL_SECRET, _S3_SECRET, _KEY_SECRET = "sasl-pw-7f3c9e1b", "s3-secret-4b8d2a6f", "tls-key-pw-9c1e5d7a"
_SECRETS = (_SASL_SECRET, _S3_SECRET, _KEY_SECRET)


@pytest.fixture
def secret_env(monkeypatch):
    for name, value in (("DESKGEN_KAFKA_SASL_PASSWORD", _SASL_SECRET), ("DESKGEN_S3_SECRET_KEY", _S3_SECRET),
                        ("DESKGEN_KAFKA_SSL_KEY_PASSWORD", _KEY_SECRET), ("DESKGEN_S3_ACCESS_KEY", "access")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DESKGEN_SECRETS_DIR", raising=False)


def _leaks(text: str) -> list[str]:
    return [secret for secret in _SECRETS if secret in text]


def test_settings_never_print_their_secrets(secret_env):
    kafka, s3 = load(KafkaSettings), load(S3Settings)
    assert kafka.client_config()["sasl.password"] == _SASL_SECRET  # handed to librdkafka, and only there
    assert s3.credentials() == ("access", _S3_SECRET)
    for shown in (repr(kafka), str(kafka), repr(s3), str(s3), kafka.model_dump_json(), s3.model_dump_json(),
                  str(kafka.model_dump()), str(s3.model_dump()), f"{kafka!r} {s3}"):
        assert not _leaks(shown), shown


def test_the_configuration_table_shows_no_secret(secret_env):
    rows = [row for section in (RuntimeSettings, KafkaSettings, S3Settings, ImageSettings) for row in describe(section)]
    assert not _leaks(repr(rows))
    table = subprocess.run([sys.executable, "-m", "deskgen.common.cli", "config"], capture_output=True, text=True,
                           timeout=120, env=os.environ.copy())
    assert table.returncode == 0, table.stderr[-2000:]
    assert "DESKGEN_KAFKA_SASL_PASSWORD" in table.stdout
    assert not _leaks(table.stdout + table.stderr)


def test_secrets_are_read_from_a_mounted_secrets_folder(monkeypatch, tmp_path):
    (tmp_path / "deskgen_s3_secret_key").write_text(_S3_SECRET)
    (tmp_path / "deskgen_kafka_sasl_password").write_text(_SASL_SECRET)
    monkeypatch.delenv("DESKGEN_S3_SECRET_KEY", raising=False)
    monkeypatch.delenv("DESKGEN_KAFKA_SASL_PASSWORD", raising=False)
    monkeypatch.setenv("DESKGEN_SECRETS_DIR", str(tmp_path))
    assert load(S3Settings).secret_key.get_secret_value() == _S3_SECRET
    assert load(KafkaSettings).sasl_password.get_secret_value() == _SASL_SECRET


def test_no_other_source_supplies_credentials(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text(f"DESKGEN_S3_SECRET_KEY={_S3_SECRET}\nDESKGEN_KAFKA_SASL_PASSWORD={_SASL_SECRET}\n")
    monkeypatch.chdir(tmp_path)
    for name in ("DESKGEN_S3_SECRET_KEY", "DESKGEN_KAFKA_SASL_PASSWORD", "DESKGEN_SECRETS_DIR"):
        monkeypatch.delenv(name, raising=False)
    assert load(S3Settings).secret_key is None and load(KafkaSettings).sasl_password is None


@pytest.mark.parametrize("variable, value", [("DESKGEN_KAFKA_SESSION_TIMEOUT_MS", "soon"),
                                             ("DESKGEN_KAFKA_EXTRA", '{"sasl.oauthbearer.client.secret": "' + _KEY_SECRET)])
def test_a_bad_setting_is_a_clear_fatal_error_that_echoes_no_secret(secret_env, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(FatalError) as refused:
        load(KafkaSettings)
    field = variable.removeprefix("DESKGEN_KAFKA_").lower()
    assert field in str(refused.value).lower() and not _leaks(str(refused.value))


def test_kafka_security_settings_pass_through(monkeypatch):
    monkeypatch.setenv("DESKGEN_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("DESKGEN_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("DESKGEN_KAFKA_SASL_USERNAME", "u")
    monkeypatch.setenv("DESKGEN_KAFKA_SASL_PASSWORD", "p")
    monkeypatch.setenv("DESKGEN_KAFKA_EXTRA", '{"socket.keepalive.enable": "true", "sasl.oauthbearer.client.secret": "s3cr3t"}')
    kafka = load(KafkaSettings)
    config = kafka.client_config()
    assert config["security.protocol"] == "SASL_SSL" and config["sasl.password"] == "p"
    assert config["socket.keepalive.enable"] == "true" and config["sasl.oauthbearer.client.secret"] == "s3cr3t"
    assert "s3cr3t" not in repr(kafka), "extra properties may hold secrets: never shown"

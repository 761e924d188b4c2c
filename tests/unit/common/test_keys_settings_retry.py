import threading

import pytest

from deskgen.common import settings
from deskgen.common.errors import FatalError, InvalidInputError
from deskgen.common.keys import check_object_key, generated_key, upload_key
from deskgen.common.models import resolve
from deskgen.common.retry import Backoff


def test_keys_are_derived_from_the_job_id():
    assert upload_key("job1", ".JPEG") == "uploads/job1/original.jpg"
    assert generated_key("job1", "ott_3d") == "generated/job1/ott_3d.png"


@pytest.mark.parametrize("key", ["../x", "a/../../b", "/abs", "a//b", "a\\b", "", "x/./y"])
def test_unsafe_object_keys_are_refused(key):
    with pytest.raises(InvalidInputError):
        check_object_key(key)


def test_keys_refuse_hostile_job_ids_and_presets():
    with pytest.raises(InvalidInputError):
        upload_key("../etc", "jpg")
    with pytest.raises(InvalidInputError):
        generated_key("job1", "../x")


def test_settings_hide_secrets_and_name_bad_values(monkeypatch):
    monkeypatch.setenv("DESKGEN_S3_SECRET_KEY", "hunter2")
    monkeypatch.setenv("DESKGEN_S3_ACCESS_KEY", "me")
    s3 = settings.load(settings.S3Settings)
    assert "hunter2" not in repr(s3) and "hunter2" not in str(s3.model_dump())
    assert s3.credentials() == ("me", "hunter2")
    monkeypatch.setenv("DESKGEN_HTTP_PORT", "not-a-port")
    with pytest.raises(FatalError, match="DESKGEN_HTTP_PORT"):
        settings.load(settings.RuntimeSettings)


def test_kafka_security_settings_pass_through(monkeypatch):
    monkeypatch.setenv("DESKGEN_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("DESKGEN_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("DESKGEN_KAFKA_SASL_USERNAME", "u")
    monkeypatch.setenv("DESKGEN_KAFKA_SASL_PASSWORD", "p")
    monkeypatch.setenv("DESKGEN_KAFKA_EXTRA", '{"socket.keepalive.enable": "true", "sasl.oauthbearer.client.secret": "s3cr3t"}')
    kafka = settings.load(settings.KafkaSettings)
    config = kafka.client_config()
    assert config["security.protocol"] == "SASL_SSL" and config["sasl.password"] == "p"
    assert config["socket.keepalive.enable"] == "true" and config["sasl.oauthbearer.client.secret"] == "s3cr3t"
    assert "s3cr3t" not in repr(kafka), "extra properties may hold secrets: never shown"


def test_secrets_can_come_from_mounted_files(monkeypatch, tmp_path):
    (tmp_path / "deskgen_s3_secret_key").write_text("from-file")
    monkeypatch.setenv("DESKGEN_SECRETS_DIR", str(tmp_path))
    monkeypatch.delenv("DESKGEN_S3_SECRET_KEY", raising=False)
    assert settings.load(settings.S3Settings).secret_key.get_secret_value() == "from-file"


def test_backoff_doubles_up_to_its_cap_and_stops_on_shutdown():
    backoff = Backoff(attempts=5, base_s=0.1, cap_s=0.5)
    assert 0.08 <= backoff.delay(1) <= 0.12
    assert 0.4 <= backoff.delay(10) <= 0.6
    stop = threading.Event()
    stop.set()
    assert backoff.sleep(1, stop) is False


def test_model_uris_resolve_or_fail_clearly(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"1")
    assert resolve(f"file://{tmp_path}/w.bin") == tmp_path / "w.bin"
    assert resolve("pkg://deskgen.common/schemas/defs.json").is_file()
    with pytest.raises(FatalError, match="not found"):
        resolve(f"file://{tmp_path}/missing")
    with pytest.raises(FatalError, match="unsupported"):
        resolve("ftp://x/y")
    with pytest.raises(FatalError, match="not installed"):
        resolve("pkg://no_such_package_here/x")

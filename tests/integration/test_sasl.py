"""Kafka SASL/PLAIN: the services work with the right credentials and stop clearly, without a storm of
login attempts, with wrong ones; no log or HTTP endpoint of a full SASL run shows a secret."""

from __future__ import annotations

import base64
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass

import pytest

from deskgen.common.topology import STAGES

pytestmark = [pytest.mark.integration, pytest.mark.security]

_LOGIN_WAIT_S = 45  # how long a service may keep trying before the test calls it a hang
_MAX_FAILED_LOGINS = 40  # librdkafka reconnects about twice a second; a fail-fast service stays far below


def sasl_env(user: str, password: str | None = None) -> dict[str, str]:
    """Client settings for the local broker's SASL/PLAIN listener (password omitted: it comes from elsewhere)."""
    import localstack

    env = {"DESKGEN_KAFKA_BOOTSTRAP_SERVERS": localstack.kafka_sasl_bootstrap(),
           "DESKGEN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "DESKGEN_KAFKA_SASL_MECHANISM": "PLAIN",
           "DESKGEN_KAFKA_SASL_USERNAME": user}
    return env if password is None else {**env, "DESKGEN_KAFKA_SASL_PASSWORD": password}


@dataclass
class SaslRun:
    pipeline: object
    services: list
    jobs: list[str]  # a desk, then not a desk
    results: dict[str, list[dict]]
    secrets: dict[str, str]  # what must never be printed, by name


@pytest.fixture(scope="module")
def sasl_run(stack, tmp_path_factory):
    """classifier → captioner → generator (test stages), all over SASL with DEBUG logs: the classifier with
    librdkafka's security debug on, the captioner reading both secrets from a mounted secrets folder
    instead of the environment. Two jobs: a desk (succeeds) and not a desk (rejected)."""
    import localstack
    from support.pipeline import Pipeline, photo_bytes

    pipeline = Pipeline(stack, tmp_path_factory.mktemp("sasl-run"))
    pipeline.create_topics()
    user, password = localstack.sasl_credentials()
    s3_secret = localstack.s3_credentials().password
    mounted = tmp_path_factory.mktemp("mounted-secrets")
    (mounted / "deskgen_kafka_sasl_password").write_text(password)
    (mounted / "deskgen_s3_secret_key").write_text(s3_secret)
    debug = {"DESKGEN_LOG_LEVEL": "DEBUG"}

    classifier = pipeline.start("classifier", **sasl_env(user, password), **debug,
                                DESKGEN_KAFKA_EXTRA='{"debug": "security"}')
    environment = pipeline.env
    pipeline.env = {k: v for k, v in environment.items() if k not in ("DESKGEN_S3_SECRET_KEY", "DESKGEN_KAFKA_SASL_PASSWORD")}
    try:
        captioner = pipeline.start("captioner", **sasl_env(user), **debug, DESKGEN_SECRETS_DIR=str(mounted))
    finally:
        pipeline.env = environment
    generator = pipeline.start("generator", **sasl_env(user, password), **debug)
    jobs = [pipeline.submit(photo_bytes((30, 200, 40)), preset="mix"), pipeline.submit(photo_bytes((220, 30, 30)))]
    results = pipeline.results(jobs, timeout=120)
    try:
        yield SaslRun(pipeline, [classifier, captioner, generator], jobs, results,
                      {"S3 secret key": s3_secret, "SASL password": password})
    finally:
        pipeline.stop_all()


def test_every_stage_works_over_sasl_with_the_right_credentials(sasl_run):
    desk, not_desk = sasl_run.jobs
    assert [r["status"] for r in sasl_run.results[desk]] == ["succeeded"], sasl_run.pipeline.describe_failure()
    assert list(sasl_run.results[desk][0]["timeline"]) == list(STAGES)
    assert [(r["status"], r["reason"]) for r in sasl_run.results[not_desk]] == [("rejected", "not_desk")]
    assert all(service.process.poll() is None for service in sasl_run.services)


def _failed_logins(kafka_log) -> int:
    return kafka_log.read_text(errors="replace").count("Failed authentication") if kafka_log.exists() else 0


def test_a_wrong_sasl_password_stops_the_service_clearly_without_a_retry_storm(pipeline):
    import localstack

    pipeline.create_topics()
    kafka_log = localstack.LOG_DIR / "kafka.log"
    before = _failed_logins(kafka_log)
    wrong = f"wrong-{uuid.uuid4().hex}"
    service = pipeline.start("classifier", **sasl_env(localstack.sasl_credentials().user, wrong))
    started = time.monotonic()
    try:
        exit_code = service.process.wait(_LOGIN_WAIT_S)
    except subprocess.TimeoutExpired:
        exit_code = None
    lived = time.monotonic() - started
    time.sleep(1.0)  # the broker logs a refused login a moment after it happens
    failed_logins = _failed_logins(kafka_log) - before
    log = service.log()

    assert failed_logins >= 1, "the broker saw no login attempt: is the SASL listener up?"
    assert exit_code is not None, (f"still retrying after {lived:.0f} s ({failed_logins} refused logins so far) "
                                   f"instead of stopping:\n{log[-2000:]}")
    assert exit_code == 2, f"exit code {exit_code}:\n{log[-2000:]}"
    assert re.search(r"ERROR deskgen\.\S+ .*[Aa]uthentication failed", log), f"no clear message:\n{log[-2000:]}"
    assert failed_logins <= _MAX_FAILED_LOGINS, f"{failed_logins} refused logins in {lived:.0f} s: a retry storm"
    assert wrong not in log


def _forms(secret: str) -> list[str]:
    return [secret, base64.b64encode(secret.encode()).decode()]


def test_no_log_of_a_full_sasl_run_holds_a_configured_secret(sasl_run):
    import localstack

    user = localstack.sasl_credentials().user
    plain_login = base64.b64encode(f"\0{user}\0{sasl_run.secrets['SASL password']}".encode()).decode()
    assert any(r["status"] == "succeeded" for rs in sasl_run.results.values() for r in rs), "the run did no work"
    for service in sasl_run.services:
        log = service.log()
        assert "DEBUG" in log, f"{service.name} did not log at DEBUG"
        for name, secret in sasl_run.secrets.items():
            assert not any(form in log for form in _forms(secret)), f"{service.name}'s log holds the {name}"
        assert plain_login not in log, f"{service.name}'s log holds the SASL/PLAIN login message"


def test_no_http_endpoint_of_a_running_service_shows_a_secret(sasl_run):
    for service in sasl_run.services:
        port = service.http_port()
        for path in ("/metrics", "/healthz", "/readyz"):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                    body = response.read().decode(errors="replace")
            except urllib.error.HTTPError as error:  # /readyz may say 503; its body still must not leak
                body = error.read().decode(errors="replace")
            for name, secret in sasl_run.secrets.items():
                assert secret not in body, f"{service.name} {path} shows the {name}"

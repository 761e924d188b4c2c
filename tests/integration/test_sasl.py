"""Kafka SASL/PLAIN: the services work with the right credentials and stop clearly, without a storm of
login attempts, with wrong ones."""

from __future__ import annotations

import re
import subprocess
import time
import uuid

import pytest

from security.sasl import sasl_env

pytestmark = pytest.mark.integration

_LOGIN_WAIT_S = 45  # how long a service may keep trying before the test calls it a hang
_MAX_FAILED_LOGINS = 40  # librdkafka reconnects about twice a second; a fail-fast service stays far below


def test_every_stage_works_over_sasl_with_the_right_credentials(sasl_run):
    desk, not_desk = sasl_run.jobs
    assert [r["status"] for r in sasl_run.results[desk]] == ["succeeded"], sasl_run.pipeline.describe_failure()
    assert list(sasl_run.results[desk][0]["timeline"]) == ["classifier", "captioner", "generator"]
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

"""One full pipeline run over the broker's SASL_PLAINTEXT listener, shared by the security tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from security.sasl import sasl_env


@dataclass
class SaslRun:
    pipeline: object
    services: list
    jobs: list[str]  # a desk, then not a desk
    results: dict[str, list[dict]]
    secrets: dict[str, str]  # what must never be printed, by name


@pytest.fixture(scope="package")
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

"""A stage keeps committing after the Kafka broker restarts: the reproduction of a hang the chaos run
found. With librdkafka 2.16 the first ``send_offsets_to_transaction`` after a restart can block far past
its own timeout (confluentinc/librdkafka#5456, #5511): the stage stops polling, is evicted from its group
only after ``max.poll.interval.ms`` and then stays stuck, alive, for good. Processes that exit are
restarted, as Kubernetes would. Each stage's /readyz turns false while the broker is down and true again once
it is back, before any new record arrives (an idle pipeline must not stay unready). Uses the light test stages
(no models); about 60 s."""

from __future__ import annotations

import time

import pytest

from deskgen.common.topology import STAGES
from support.pipeline import answers_ok, photo_bytes

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.chaos]



def test_stages_commit_again_within_two_minutes_of_a_broker_restart(pipeline):
    import localstack

    pipeline.create_topics()
    env = {"DESKGEN_KAFKA_SESSION_TIMEOUT_MS": "6000", "DESKGEN_KAFKA_TRANSACTION_TIMEOUT_MS": "10000"}
    running = {stage: pipeline.start(stage, **env) for stage in STAGES}
    before = pipeline.submit()
    assert pipeline.results([before])[before][0]["status"] == "succeeded"
    ports = {stage: service.http_port() for stage, service in running.items()}
    try:
        localstack.stop_kafka()
        # Each stage says it lost the broker (librdkafka: all brokers down) ...
        _until(lambda: not any(answers_ok(f"http://127.0.0.1:{port}/readyz") for port in ports.values()), 60,
               "every stage unready while the broker is down", pipeline)
    finally:
        localstack.start_kafka()
    # ... and is ready again once it is back, with no record arriving (an idle pipeline).
    _until(lambda: all(answers_ok(f"http://127.0.0.1:{port}/readyz") for port in ports.values()), 90,
           "every stage ready again after the restart, before any new job", pipeline)
    jobs = [f"after-restart-{n}" for n in range(5)]
    for job in jobs:  # the first transactions after the restart are the ones that hang
        pipeline.backend.submit(photo_bytes(), job_id=job, wait=False)
        time.sleep(0.5)
    pipeline.backend.flush()

    results: dict[str, list] = {}
    deadline = time.monotonic() + 120  # a hang lasts ≥ max.poll.interval.ms (300 s)
    while time.monotonic() < deadline and not all(results.get(job) for job in jobs):
        for stage, service in running.items():
            if service.process.poll() is not None:  # exited (e.g. on a FatalError): restart it
                running[stage] = pipeline.start(stage, **env)
        results = pipeline.results(jobs, timeout=3, settle=0)

    assert all(len(results[job]) == 1 for job in jobs), f"{results}\n{pipeline.describe_failure()}"


def _until(condition, timeout: float, what: str, pipeline) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}\n{pipeline.describe_failure()}"
        time.sleep(0.5)

"""The runtime on the real stack, driven through the small test stages in tests/support/stages.py."""

from __future__ import annotations

import random
import signal
import time
import urllib.request

import pytest
from PIL import Image

from deskgen.common.topology import STAGES

from support.pipeline import dlq_payload, photo_bytes

pytestmark = pytest.mark.integration


def _start_chain(pipeline, **env):
    return [pipeline.start(stage, **env) for stage in STAGES]


def _assert_one_result_each(pipeline, results):
    problems = {job: len(rs) for job, rs in results.items() if len(rs) != 1}
    assert not problems, f"jobs without exactly one terminal result: {problems}\n{pipeline.describe_failure()}"


def test_every_job_ends_with_exactly_one_terminal_result(pipeline):
    pipeline.create_topics(partitions=3)
    _start_chain(pipeline)
    desks = [pipeline.submit(photo_bytes((30, 200, 40)), preset="mix") for _ in range(6)]
    not_desks = [pipeline.submit(photo_bytes((220, 30, 30))) for _ in range(3)]

    results = pipeline.results(desks + not_desks)

    _assert_one_result_each(pipeline, results)
    for job in desks:
        result = results[job][0]
        assert result["status"] == "succeeded", result
        assert list(result["timeline"]) == list(STAGES)
        image = Image.open(__import__("io").BytesIO(pipeline.store.get(result["output"]["image_key"])))
        assert image.size == (32, 32)
        assert result["output"]["image_key"] == f"generated/{job}/mix.png"
    for job in not_desks:
        result = results[job][0]
        assert (result["status"], result["reason"], result["stage"]) == ("rejected", "not_desk", "classifier")
        assert result["classification"]["label"] == "not_desk"


def test_kill_9_mid_job_loses_nothing_and_duplicates_nothing(pipeline):
    pipeline.create_topics(partitions=1)
    classifier, captioner, _ = _start_chain(pipeline, TEST_STAGE_SLEEP_S="0.3")
    jobs = [pipeline.submit() for _ in range(12)]
    captioner.wait_log(r"job \w+ → ok", timeout=60)
    for victim in (captioner, classifier):  # crash both mid-stream, restart under the same instance id
        time.sleep(random.uniform(0.2, 0.8))
        victim.kill()
        pipeline.start(victim.name.split("-")[0], TEST_STAGE_SLEEP_S="0.3")

    results = pipeline.results(jobs, timeout=120, settle=3.0)

    _assert_one_result_each(pipeline, results)
    assert all(rs[0]["status"] == "succeeded" for rs in results.values())


def test_an_event_that_kills_its_stage_process_ends_failed_at_the_crash_limit_and_blocks_nothing(pipeline):
    pipeline.create_topics()
    before, poison, after = pipeline.submit(), pipeline.submit(photo_bytes(size=(77, 64))), pipeline.submit()
    # the classifier SIGKILLs itself on this photo; a short session lets its restart rejoin at once
    die = {"TEST_STAGE_DIE_ON_WIDTH": "77", "DESKGEN_KAFKA_SESSION_TIMEOUT_MS": "6000", "DESKGEN_CRASH_LIMIT": "3"}
    classifier = pipeline.start("classifier", **die)
    pipeline.start("captioner")
    pipeline.start("generator")

    deaths, results = 0, {}
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not all(results.get(job) for job in (before, poison, after)):
        if classifier.process.poll() is not None:  # restarted as Kubernetes would, same instance id
            assert classifier.process.returncode == -signal.SIGKILL, classifier.log()
            deaths += 1
            classifier = pipeline.start("classifier", **die)
        results = pipeline.results([before, poison, after], timeout=2, settle=0)
    results = pipeline.results([before, poison, after], timeout=30, settle=3)

    _assert_one_result_each(pipeline, results)
    assert deaths == 3, f"the crash limit is 3; the process died {deaths} times"
    assert (results[poison][0]["status"], results[poison][0]["reason"]) == ("failed", "stage_crashed")
    assert results[before][0]["status"] == results[after][0]["status"] == "succeeded"
    assert [(r["job_id"], r["reason"]) for r in pipeline.dlq(1)] == [(poison, "stage_crashed")]


def test_a_partition_taken_away_mid_batch_is_consumed_again_when_it_comes_back(pipeline):
    # A batch pauses its partitions; a rebalance moves one away mid-batch and it comes back after the
    # batch: it must be fetched again (librdkafka documents that pause flags outlive a rebalance).
    pipeline.create_topics(partitions=2)
    first = [pipeline.submit() for _ in range(4)]  # one batch of 4 × 3 s, both partitions paused
    slow = pipeline.start("classifier", instance="0", TEST_STAGE_SLEEP_S="3")
    pipeline.start("captioner")
    pipeline.start("generator")
    slow.wait_log(r"assigned \[0, 1\]")
    time.sleep(1.5)
    other = pipeline.start("classifier", instance="1")
    other.wait_log(r"assigned \[\d\]")
    slow.wait_log(r"revoked during the batch")  # the batch is over; the partition it lost is elsewhere
    first_results = pipeline.results(first, timeout=90)  # and the slow one is idle again
    assert other.terminate() == 0
    slow.wait_log(r"revoked during the batch[\s\S]*assigned \[0, 1\]")  # ...and now back
    later = [pipeline.submit() for _ in range(8)]  # keyed by job id: both partitions get some

    results = {**first_results, **pipeline.results(later, timeout=90, settle=2)}

    _assert_one_result_each(pipeline, results)
    assert all(rs[0]["status"] == "succeeded" for rs in results.values())


def test_a_consumer_that_stops_fetching_what_it_owns_exits_and_its_restart_takes_over(pipeline):
    pipeline.create_topics()
    stall = {"DESKGEN_PARTITION_STALL_SECONDS": "4"}
    stuck = pipeline.start("classifier", TEST_STAGE_STOP_FETCHING="1", **stall)
    downstream = [pipeline.start("captioner", **stall), pipeline.start("generator", **stall)]
    stuck.wait_log(r"assigned \[0\]")
    time.sleep(6)  # idle partitions, nothing waiting: no false alarm
    assert stuck.process.poll() is None, stuck.log()
    job = pipeline.submit()

    assert stuck.process.wait(60) == 2
    assert "not fetched" in stuck.log() and "fresh consumer" in stuck.log()
    pipeline.start("classifier", **stall)
    assert pipeline.results([job])[job][0]["status"] == "succeeded"
    time.sleep(6)  # transactional inputs end in commit markers: idle there is no alarm either
    assert all(service.process.poll() is None for service in downstream), pipeline.describe_failure()


def test_malformed_event_ends_as_dlq_record_and_failed_result(pipeline):
    pipeline.create_topics()
    pipeline.start("classifier")
    headers = [("ce_specversion", b"1.0"), ("ce_id", b"x1"), ("ce_source", b"/tests"),
               ("ce_type", b"com.deskgen.photo.uploaded")]
    pipeline.produce_raw("uploaded", b"job-not-json", b"{this is not json", headers)
    pipeline.produce_raw("uploaded", b"job-no-headers", b'{"job_id": "job-no-headers"}', [])

    results = pipeline.results(["job-not-json", "job-no-headers"])
    dlq = pipeline.dlq(2)

    assert [(r["status"], r["reason"]) for r in results["job-not-json"]] == [("failed", "event_not_json")]
    assert [(r["status"], r["reason"]) for r in results["job-no-headers"]] == [("failed", "event_headers_invalid")]
    by_job = {r["job_id"]: r for r in dlq}
    assert by_job["job-not-json"]["reason"] == "event_not_json"
    assert dlq_payload(by_job["job-not-json"]) == b"{this is not json"
    assert by_job["job-not-json"]["source"]["topic"] == pipeline.topic("uploaded")


def test_event_whose_object_is_missing_ends_as_dlq_record_and_failed_result(pipeline):
    pipeline.create_topics()
    pipeline.start("classifier")
    from deskgen.common import events

    pipeline.publish("uploaded", {"job_id": "job-missing", "image_key": "uploads/job-missing/original.jpg",
                                  "uploaded_at": events.now(), "request": {}, "timeline": {}})

    results = pipeline.results(["job-missing"])

    assert [(r["status"], r["reason"]) for r in results["job-missing"]] == [("failed", "object_missing")]
    assert [r["reason"] for r in pipeline.dlq(1)] == ["object_missing"]


def test_s3_outage_during_a_job_is_retried_until_s3_returns(pipeline, stack):
    import localstack

    pipeline.create_topics()
    retries = {"DESKGEN_RETRY_BASE_MS": "200", "DESKGEN_RETRY_MAX_MS": "2000", "DESKGEN_RETRY_MAX_ATTEMPTS": "60",
               "DESKGEN_S3_TIMEOUT_SECONDS": "2"}
    services = _start_chain(pipeline, **retries)
    warmup = pipeline.submit()
    assert pipeline.results([warmup])[warmup][0]["status"] == "succeeded"
    job = pipeline.submit()
    localstack.stop_s3()
    try:
        deadline = time.monotonic() + 60
        while not any("transient failure" in s.log() for s in services) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # a few retries while S3 is away
    finally:
        localstack.start_s3()

    result = pipeline.results([job], timeout=120)[job]

    assert [r["status"] for r in result] == ["succeeded"], pipeline.describe_failure()
    assert max(entry["attempts"] for entry in result[0]["timeline"].values()) > 1


def test_job_longer_than_max_poll_interval_does_not_rebalance(pipeline):
    """Two jobs in a row, each waiting a set 16 s (not computing: the test must not depend on CPU speed),
    against a 7 s max.poll.interval.ms and a 6 s session timeout."""
    pipeline.create_topics()
    poll_limits = {"DESKGEN_KAFKA_SESSION_TIMEOUT_MS": "6000", "DESKGEN_KAFKA_MAX_POLL_INTERVAL_MS": "7000"}
    pipeline.start("classifier")
    pipeline.start("captioner")
    generator = pipeline.start("generator", TEST_STAGE_SLEEP_S="16", **poll_limits)
    jobs = [pipeline.submit(), pipeline.submit()]

    results = pipeline.results(jobs, timeout=120, settle=2.0)

    _assert_one_result_each(pipeline, results)
    assert min(rs[0]["timeline"]["generator"]["handle_ms"] for rs in results.values()) >= 16000
    assert "revoked" not in generator.log(), generator.log()[-3000:]


def test_service_serves_metrics_health_and_readiness(pipeline):
    pipeline.create_topics()
    classifier = pipeline.start("classifier")
    port = classifier.http_port()
    classifier.wait_log(r"assigned", timeout=60)
    job = pipeline.submit(photo_bytes((220, 30, 30)))
    pipeline.results([job])

    def get(path):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()

    assert get("/healthz")[0] == 200
    assert get("/readyz")[0] == 200
    metrics = get("/metrics")[1]
    assert 'deskgen_events_total{outcome="rejected",stage="classifier"} 1.0' in metrics
    assert 'deskgen_results_total{reason="not_desk",stage="classifier",status="rejected"} 1.0' in metrics
    assert "deskgen_stage_duration_seconds_bucket" in metrics


def test_sigterm_stops_a_service_cleanly(pipeline):
    pipeline.create_topics()
    classifier = pipeline.start("classifier")
    classifier.wait_log(r"assigned", timeout=60)
    assert classifier.terminate(timeout=30) == 0


def test_a_stop_during_a_retry_backoff_is_logged_as_such_and_the_job_is_redelivered(pipeline):
    pipeline.create_topics(partitions=1)
    flaky = pipeline.start("classifier", TEST_STAGE_TRANSIENT="1", DESKGEN_RETRY_BASE_MS="60000",
                           DESKGEN_RETRY_MAX_MS="60000")
    job = pipeline.submit()
    flaky.wait_log(r"transient failure on 1 job\(s\), attempt 1/")

    assert flaky.terminate() == 0
    assert "stopped during a retry backoff" in flaky.log()
    assert "shutdown grace exceeded" not in flaky.log()
    pipeline.start("classifier")
    pipeline.start("captioner")
    pipeline.start("generator")
    _assert_one_result_each(pipeline, pipeline.results([job]))

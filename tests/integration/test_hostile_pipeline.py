"""Hostile input against a running service (the test classifier from tests/support/stages.py, which goes
through the real runtime and the shared decoder): every bad record ends as exactly one DLQ record and,
where its job id can be recovered, exactly one terminal result with a reason code; the service never
exits and still serves a good job afterwards."""

from __future__ import annotations

import base64
import json
import os
import re
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from deskgen.common import events
from support.hostile_images import DECODED, REFUSED
from support.malformed import DEFECTS, MAX_EVENT_BYTES, REASONS, hostile_records, sample, valid_data
from support.pipeline import photo_bytes

pytestmark = [pytest.mark.integration, pytest.mark.hostile]

_SAFE_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_PER_DEFECT = 3  # 22 defect classes × 3 ≈ 60 fuzzed records per run


def _start_classifier(pipeline, **env):
    pipeline.create_topics(partitions=1)
    classifier = pipeline.start("classifier", DESKGEN_MAX_EVENT_BYTES=str(MAX_EVENT_BYTES), **env)
    classifier.wait_log(r"assigned", timeout=90)
    return classifier


def _produce_many(pipeline, kind, records) -> list[int]:
    """Produce raw (key, value, headers) records in order; returns their offsets."""
    producer = Producer({"bootstrap.servers": pipeline.bootstrap, "enable.idempotence": True,
                         "message.max.bytes": 4 * 1024 * 1024})
    offsets: list[int | None] = [None] * len(records)
    failures = []

    def delivered(index):
        return lambda err, message: failures.append((index, err)) if err else offsets.__setitem__(index, message.offset())

    for index, (key, value, headers) in enumerate(records):
        producer.produce(pipeline.topic(kind), key=key, value=value, headers=headers, on_delivery=delivered(index))
        producer.poll(0)
    assert producer.flush(60) == 0 and not failures, f"undelivered: {failures[:5]}"
    return offsets


def _submit_many(pipeline, photos) -> list[str]:
    """Upload each ``(bytes, ext)`` photo and publish its `uploaded` event (one producer); returns job ids."""
    from deskgen.common.keys import upload_key

    jobs, records = [], []
    for data, ext in photos:
        jobs.append(uuid.uuid4().hex)
        key = upload_key(jobs[-1], ext)
        pipeline.store.put(key, data, "image/png" if ext == "png" else "image/jpeg")
        record = events.encode("uploaded", {**valid_data("uploaded", jobs[-1]), "image_key": key}, source="/tests")
        records.append((record.key, record.value, record.headers))
    _produce_many(pipeline, "uploaded", records)
    return jobs


def _serves_a_good_job_afterwards(pipeline, classifier) -> str:
    """A good job published after the hostile ones; the partition is ordered, so once it is handled
    every earlier record has been handled too. Fails at once if the service has exited."""
    job = pipeline.submit(photo_bytes())
    classifier.wait_log(rf"job {job} → ok", timeout=120)
    assert classifier.process.poll() is None, f"the service exited:\n{classifier.log()[-3000:]}"
    return job


def _peak_rss_mib(service) -> float:
    status = Path(f"/proc/{service.process.pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024


def _dlq_by_offset(pipeline, count: int) -> dict[int, list[dict]]:
    by_offset: dict[int, list[dict]] = {}
    for record in pipeline.dlq(count, timeout=60):
        by_offset.setdefault(record["source"]["offset"], []).append(record)
    return by_offset


def test_fuzzed_events_each_end_as_one_dlq_record_and_one_result_and_the_service_keeps_serving(pipeline):
    classifier = _start_classifier(pipeline)
    run = uuid.uuid4().hex[:6]
    hostile = [record.with_job_id(f"fz{run}-{index}")
               for index, record in enumerate(r for defect in sorted(DEFECTS)
                                               for r in sample(hostile_records("uploaded", [defect], rekey=True),
                                                               _PER_DEFECT))]
    offsets = _produce_many(pipeline, "uploaded", [(h.key, h.value, h.headers) for h in hostile])
    good = _serves_a_good_job_afterwards(pipeline, classifier)

    dlq = _dlq_by_offset(pipeline, len(hostile))
    recovered = {offset: events.recover_job_id(h.key, h.value, h.headers) for offset, h in zip(offsets, hostile)}
    expected_jobs = {job: h for (offset, job), h in zip(recovered.items(), hostile) if job is not None}
    results = pipeline.results(expected_jobs, timeout=60)

    problems = []
    for offset, h in zip(offsets, hostile):
        records = dlq.get(offset, [])
        if [(r["reason"], r["status"], r["job_id"]) for r in records] != [(h.reason, "failed", recovered[offset])]:
            problems.append(f"offset {offset} ({h.defect}, want {h.reason}): DLQ {[(r['reason'], r['job_id']) for r in records]}")
    for job, h in expected_jobs.items():
        if [(r["status"], r["reason"]) for r in results[job]] != [("failed", h.reason)]:
            problems.append(f"job {job!r} ({h.defect}): results {[(r['status'], r.get('reason')) for r in results[job]]}")
    assert not problems, "\n".join(problems[:20]) + f"\n{classifier.log()[-3000:]}"
    assert set(dlq) == set(offsets), f"DLQ records for offsets nobody produced: {set(dlq) - set(offsets)}"
    assert all(_SAFE_JOB_ID.fullmatch(job) for job in results), [job for job in results if not _SAFE_JOB_ID.fullmatch(job)]
    assert {r["reason"] for rs in dlq.values() for r in rs} <= REASONS
    assert good in {r["data"]["job_id"] for r in pipeline.read("classified", until=lambda rs: rs, settle=0.2)}


def test_hostile_images_each_end_with_their_specific_reason_and_decoding_memory_stays_bounded(pipeline):
    classifier = _start_classifier(pipeline, DESKGEN_IMAGE_MAX_BYTES=str(1024 * 1024))
    _serves_a_good_job_afterwards(pipeline, classifier)  # warm: imports and first decode done
    baseline_mib = _peak_rss_mib(classifier)
    cases = {**{name: (data, "jpg", reason) for name, (data, reason) in REFUSED.items()},
             "over_the_byte_limit": (os.urandom(1024 * 1024 + 1), "jpg", "image_too_large"),
             **{name: (data, "png", None) for name, (data, _) in DECODED.items()}}
    jobs = dict(zip(_submit_many(pipeline, [(data, ext) for data, ext, _ in cases.values()]), cases))
    refused = {job: (name, cases[name][2]) for job, name in jobs.items() if cases[name][2]}
    decoded = {job: name for job, name in jobs.items() if not cases[name][2]}
    _serves_a_good_job_afterwards(pipeline, classifier)

    results = pipeline.results(refused, timeout=60)
    outcomes = {name: [(r["status"], r.get("reason"), r["stage"]) for r in results[job]]
                for job, (name, _) in refused.items()}
    assert outcomes == {name: [("rejected", reason, "classifier")] for name, reason in refused.values()}
    dlq_reasons = sorted(r["reason"] for r in pipeline.dlq(len(refused)))
    assert dlq_reasons == sorted(reason for _, reason in refused.values())
    classified = {r["data"]["job_id"] for r in pipeline.read("classified", until=lambda rs: decoded.keys() <= {
        r["data"]["job_id"] for r in rs}, timeout=60, settle=0.2)}
    assert not {name for job, name in decoded.items() if job not in classified}, "legitimate images not classified"
    growth = _peak_rss_mib(classifier) - baseline_mib
    assert growth < 100, f"peak memory grew by {growth:.0f} MiB while decoding hostile images"


def _raw_uploaded(data: dict, *, subject: bool = True):
    """An `uploaded` record with valid CloudEvents headers around ``data`` (which may break the schema)."""
    headers = events.encode("uploaded", valid_data("uploaded", "placeholder"), source="/tests").headers
    headers = [(n, v) for n, v in headers if n != "ce_subject"]
    job = data.get("job_id") if isinstance(data.get("job_id"), str) else ""
    if subject:
        headers.append(("ce_subject", job.encode()))
    return job.encode(), json.dumps(data).encode(), headers


def test_object_keys_and_ids_that_try_to_leave_their_prefix_end_as_dlq_records_and_failed_results(pipeline):
    classifier = _start_classifier(pipeline)
    victim, run = uuid.uuid4().hex, uuid.uuid4().hex[:6]
    pipeline.store.put(f"uploads/{victim}/original.jpg", photo_bytes(), "image/jpeg")
    pipeline.store.put("models/classifier/v1/weights.bin", photo_bytes(), "application/octet-stream")
    before = set(pipeline.store.list(""))

    def job(n):
        return f"esc{run}-{n}"

    escapes = {  # job → (image key, acceptable reasons)
        job(0): ("../../etc/passwd", {"event_invalid"}),
        job(1): ("/etc/passwd", {"event_invalid"}),
        job(2): (f"uploads//{job(2)}/original.jpg", {"event_invalid"}),
        job(3): (f"uploads/{job(3)}/../../models/classifier/v1/weights.bin", {"event_invalid"}),
        job(4): (f"uploads/./{job(4)}/original.jpg", {"event_invalid", "invalid_object_key"}),
        job(5): (f"uploads/{job(5)}/", {"event_invalid", "invalid_object_key"}),
        job(6): (f"uploads/{victim}/original.jpg", {"event_invalid", "invalid_object_key"}),  # another job's photo
        job(7): ("models/classifier/v1/weights.bin", {"event_invalid", "invalid_object_key"}),
    }
    records = [_raw_uploaded({**valid_data("uploaded", name), "image_key": key}) for name, (key, _) in escapes.items()]
    traversing_ids = [f"../{job(8)}", f"/{job(9)}", f"{job(10)}/../../x"]
    records += [_raw_uploaded({**valid_data("uploaded", "x"), "job_id": bad, "image_key": "uploads/x/original.jpg"})
                for bad in traversing_ids]
    _produce_many(pipeline, "uploaded", records)
    _serves_a_good_job_afterwards(pipeline, classifier)

    results = pipeline.results(escapes, timeout=60)
    wrong = {name: [(r["status"], r.get("reason")) for r in results[name]] for name, (_, reasons) in escapes.items()
             if [r["status"] for r in results[name]] != ["failed"] or results[name][0].get("reason") not in reasons}
    assert not wrong, f"escaping keys not refused: {wrong}"
    dlq = pipeline.dlq(len(records))
    assert len(dlq) == len(records)
    assert "object_missing" not in {r["reason"] for r in dlq}, "an escaping key reached S3"
    for bad in traversing_ids:  # no job id is recoverable, so a DLQ record is all there is
        assert [r["job_id"] for r in dlq if base64.b64decode(r["key_b64"] or "") == bad.encode()] == [None]
    outside_uploads = {key for key in pipeline.store.list("") if not key.startswith("uploads/")}
    assert outside_uploads == {key for key in before if not key.startswith("uploads/")}, "an object was written"


def test_poison_events_that_break_python_json_or_dates_do_not_stop_the_service(pipeline):
    classifier = _start_classifier(pipeline)
    run = uuid.uuid4().hex[:6]
    stamp = {"received": "2026-01-02T03:04:05Z", "finished": "2026-01-02T03:04:05Z"}
    poisons = {  # job → (raw value, expected reason)
        f"deep{run}": (json.dumps(valid_data("uploaded", f"deep{run}"))[:-1] + ',"x":' + "[" * 50_000 + "]" * 50_000 + "}",
                       "event_not_json"),
        f"nan{run}": (json.dumps({**valid_data("uploaded", f"nan{run}"), "request": {"guidance": float("nan")}}),
                      "event_not_json"),
        f"surrogate{run}": (json.dumps({**valid_data("uploaded", f"surrogate{run}"), "request": {"scheduler": "\ud800"}}),
                            "event_not_json"),
        f"date{run}": (json.dumps({**valid_data("uploaded", f"date{run}"), "uploaded_at": "2024-99-99T99:99:99Z"}),
                       "event_invalid"),
        f"timeline{run}": (json.dumps({**valid_data("uploaded", f"timeline{run}"),
                                       "timeline": {f"s{i}": stamp for i in range(16)}}), "stage_output_invalid"),
    }
    pipeline.store.put(f"uploads/timeline{run}/original.jpg", photo_bytes(), "image/jpeg")
    headers = [(n, v) for n, v in events.encode("uploaded", valid_data("uploaded", "x"), source="/t").headers
               if n != "ce_subject"]
    _produce_many(pipeline, "uploaded", [(job.encode(), value.encode(), headers) for job, (value, _) in poisons.items()])
    _serves_a_good_job_afterwards(pipeline, classifier)

    results = pipeline.results(poisons, timeout=60)
    assert {job: [(r["status"], r.get("reason")) for r in rs] for job, rs in results.items()} == {
        job: [("failed", reason)] for job, (_, reason) in poisons.items()}
    assert sorted(r["reason"] for r in pipeline.dlq(len(poisons))) == sorted(reason for _, reason in poisons.values())

"""Outcome → records, with no broker: the records a handled event turns into."""

from __future__ import annotations

import base64
import json

from confluent_kafka import Message, TopicPartition

from deskgen.common import events
from deskgen.common.errors import InvalidInputError
from deskgen.common.records import DLQ_PAYLOAD_BYTES, Item, build_records, commit_offsets, first_offsets
from deskgen.common.stage import Emit, Reject, Stage

JOB = "job-1"
_MODEL = {"name": "test", "version": "1"}
_CLASSIFICATION = {"label": "desk", "score": 0.9, "threshold": 0.5, "model": _MODEL, "inference_ms": 1.0,
                   "evidence": []}


class _Classifier(Stage):
    name = "classifier"


class _Generator(Stage):
    name = "generator"


def _topic(kind: str) -> str:
    return f"t.{kind}"


def _uploaded_item(outcome, **data) -> Item:
    body = {"job_id": JOB, "image_key": f"uploads/{JOB}/original.jpg", "uploaded_at": events.now(),
            "request": {"concept": "BASIC"}, "timeline": {}, **data}
    record = events.encode("uploaded", body, source="/tests")
    message = Message(topic="t.uploaded", partition=0, offset=7, key=record.key, value=record.value,
                      headers=record.headers)
    item = Item(message, events.now(), attempts=1)
    item.event = events.decode(record.value, record.headers, "uploaded")
    item.outcome = outcome
    return item


def _decoded(records):
    return [(topic, record.kind, json.loads(record.value)) for topic, record in records]


def test_an_emit_becomes_the_next_event_carrying_the_job_and_its_timeline():
    item = _uploaded_item(Emit(_CLASSIFICATION))
    [(topic, kind, data)] = _decoded(build_records(item, _Classifier(), _topic))
    assert (topic, kind) == ("t.classified", "classified")
    assert data["job_id"] == JOB and data["request"] == {"concept": "BASIC"}
    assert data["classification"] == _CLASSIFICATION
    assert data["timeline"]["classifier"]["attempts"] == 1


def test_a_reject_is_one_rejected_result_with_its_section_and_no_dlq_record():
    item = _uploaded_item(Reject("not_desk", "score 0.1", {**_CLASSIFICATION, "label": "not_desk"}))
    [(topic, kind, data)] = _decoded(build_records(item, _Classifier(), _topic))
    assert (topic, kind) == ("t.generated", "generated")
    assert data["status"] == "rejected" and data["reason"] == "not_desk"
    assert data["classification"]["label"] == "not_desk"


def test_an_invalid_input_is_a_dlq_record_and_a_terminal_result():
    item = _uploaded_item(InvalidInputError("image_undecodable", "not an image"))
    [(dlq_topic, dlq_kind, dlq), (topic, kind, result)] = _decoded(build_records(item, _Classifier(), _topic))
    assert (dlq_topic, dlq_kind, topic, kind) == ("t.dlq", "dlq", "t.generated", "generated")
    assert dlq["job_id"] == JOB and dlq["reason"] == "image_undecodable" and dlq["source"]["offset"] == 7
    assert result["status"] == "rejected" and result["reason"] == "image_undecodable"


def test_an_event_that_did_not_decode_recovers_its_job_id_from_the_key():
    message = Message(topic="t.uploaded", partition=0, offset=3, key=JOB.encode(), value=b"\xff not json")
    item = Item(message, events.now(), outcome=InvalidInputError("event_invalid", "bad", status="failed"))
    [(_, _, dlq), (_, _, result)] = _decoded(build_records(item, _Classifier(), _topic))
    assert dlq["job_id"] == result["job_id"] == JOB and result["status"] == "failed"
    assert base64.b64decode(dlq["payload_b64"]) == b"\xff not json"


def test_without_a_job_id_only_the_dlq_record_is_written():
    message = Message(topic="t.uploaded", partition=0, offset=3, key=None, value=b"{}")
    item = Item(message, events.now(), outcome=InvalidInputError("event_invalid", "bad", status="failed"))
    [(topic, kind, dlq)] = _decoded(build_records(item, _Classifier(), _topic))
    assert kind == "dlq" and dlq["job_id"] is None


def test_the_dlq_record_keeps_at_most_64_kib_of_the_payload():
    value = b"x" * (DLQ_PAYLOAD_BYTES + 10)
    message = Message(topic="t.uploaded", partition=0, offset=3, key=JOB.encode(), value=value)
    item = Item(message, events.now(), outcome=InvalidInputError("event_too_large", "big", status="failed"))
    [(_, _, dlq), _] = _decoded(build_records(item, _Classifier(), _topic))
    assert dlq["payload_truncated"] is True and len(base64.b64decode(dlq["payload_b64"])) == DLQ_PAYLOAD_BYTES


def test_an_output_that_breaks_the_contract_fails_the_job_visibly():
    item = _uploaded_item(Emit({"label": "desk"}))  # most of the classification section is missing
    records = _decoded(build_records(item, _Classifier(), _topic))
    assert [kind for _, kind, _ in records] == ["dlq", "generated"]
    assert records[1][2]["status"] == "failed" and records[1][2]["reason"] == "stage_output_invalid"
    assert item.outcome.reason == "stage_output_invalid"


def test_a_last_stage_output_that_breaks_the_result_contract_fails_the_job():
    item = _uploaded_item(Emit({"image_key": 42}))
    records = _decoded(build_records(item, _Generator(), _topic))
    assert [kind for _, kind, _ in records] == ["dlq", "generated"]
    assert records[1][2]["status"] == "failed" and records[1][2]["reason"] == "stage_output_invalid"


def test_a_rejection_whose_section_breaks_the_contract_still_ends_the_job_with_a_minimal_result():
    item = _uploaded_item(Reject("not_desk", "low", {"label": 42}))
    [(_, kind, result)] = _decoded(build_records(item, _Classifier(), _topic))
    assert kind == "generated" and result["status"] == "rejected" and result["reason"] == "not_desk"
    assert "classification" not in result


def test_offsets_commit_one_past_the_last_message_and_rewind_to_the_first():
    items = [Item(Message(topic="t", partition=p, offset=o), "") for p, o in ((0, 5), (0, 6), (1, 2))]
    assert sorted((tp.partition, tp.offset) for tp in commit_offsets(items)) == [(0, 7), (1, 3)]
    assert all(isinstance(tp, TopicPartition) for tp in commit_offsets(items))
    assert first_offsets(items) == {("t", 0): 5, ("t", 1): 2}

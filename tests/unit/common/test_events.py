import json

import pytest

from deskgen.common import events
from deskgen.common.errors import InvalidInputError


def _uploaded(**overrides):
    data = {"job_id": "job-1", "image_key": "uploads/job-1/original.jpg", "uploaded_at": events.now(),
            "request": {"concept": "BASIC"}, "timeline": {}}
    data.update(overrides)
    return data


def test_encode_then_decode_roundtrips_with_cloudevents_headers():
    record = events.encode("uploaded", _uploaded(), source="/tests")
    headers = dict(record.headers)
    assert record.key == b"job-1"
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_type"] == b"com.deskgen.photo.uploaded"
    assert headers["ce_subject"] == b"job-1"
    event = events.decode(record.value, record.headers, "uploaded")
    assert event.job_id == "job-1" and event.data["request"] == {"concept": "BASIC"}


def test_the_minimal_upload_event_has_no_timeline_and_one_that_carries_it_is_accepted_too():
    minimal = _uploaded()
    del minimal["timeline"]
    assert sorted(minimal) == ["image_key", "job_id", "request", "uploaded_at"]
    for data in (minimal, _uploaded(), _uploaded(timeline={"backend": {"received": events.now(), "finished": events.now()}})):
        record = events.encode("uploaded", data, source="/tests")
        assert events.decode(record.value, record.headers, "uploaded").data == data


def test_traceparent_keeps_the_trace_and_changes_the_span():
    first = events.encode("uploaded", _uploaded(), source="/a")
    parent = dict(first.headers)["traceparent"].decode()
    second = events.encode("uploaded", _uploaded(), source="/b", traceparent=parent)
    child = dict(second.headers)["traceparent"].decode()
    assert child.split("-")[1] == parent.split("-")[1]
    assert child.split("-")[2] != parent.split("-")[2]


@pytest.mark.parametrize("data", [
    _uploaded(extra="field"),
    _uploaded(image_key="../../etc/passwd"),
    _uploaded(image_key="/absolute/key.jpg"),
    _uploaded(image_key="uploads//double.jpg"),
    _uploaded(job_id="../escape"),
    _uploaded(job_id=""),
    _uploaded(uploaded_at="yesterday"),
    _uploaded(request={"steps": "thirty"}),
    _uploaded(request={"unknown": 1}),
])
def test_schema_rejects_defects(data):
    with pytest.raises(InvalidInputError) as info:
        events.validate("uploaded", data)
    assert info.value.reason == "event_invalid" and info.value.status == "failed"


@pytest.mark.parametrize("value, headers, reason", [
    (b"not json", None, "event_not_json"),
    (json.dumps(_uploaded()).encode(), [], "event_headers_invalid"),
    (b"x" * 2048, None, "event_too_large"),
])
def test_decode_names_the_defect(value, headers, reason):
    good = events.encode("uploaded", _uploaded(), source="/t").headers
    with pytest.raises(InvalidInputError) as info:
        events.decode(value, good if headers is None else headers, "uploaded", max_bytes=1024)
    assert info.value.reason == reason


def test_decode_refuses_an_event_of_another_kind():
    record = events.encode("uploaded", _uploaded(), source="/t")
    with pytest.raises(InvalidInputError, match="event_type_unexpected"):
        events.decode(record.value, record.headers, "classified")


def test_terminal_result_requires_output_when_succeeded_and_reason_otherwise():
    base = {"job_id": "j", "stage": "generator", "finished_at": events.now(), "timeline": {}}
    with pytest.raises(InvalidInputError):
        events.validate("generated", {**base, "status": "succeeded"})
    with pytest.raises(InvalidInputError):
        events.validate("generated", {**base, "status": "failed"})
    events.validate("generated", {**base, "status": "rejected", "reason": "not_desk"})


def test_job_id_is_recovered_from_key_subject_or_data():
    assert events.recover_job_id(b"abc", b"", None) == "abc"
    assert events.recover_job_id(None, b"", [("ce_subject", b"from-subject")]) == "from-subject"
    assert events.recover_job_id(None, b'{"job_id": "from-data"}', None) == "from-data"
    assert events.recover_job_id(b"../evil", b"garbage", None) is None

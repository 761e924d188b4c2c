"""Property-based fuzzing of the event contract: every malformed record of every kind is refused with
its documented reason code, and nothing else ever escapes ``events.decode`` or ``recover_job_id``."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deskgen.common import events, keys
from deskgen.common.errors import InvalidInputError
from support.malformed import (DEFECTS, JOB, MAX_EVENT_BYTES, PIPELINE_KINDS, PIPELINE_ONLY_DEFECTS, REASONS,
                               UNSAFE_JOB_IDS, UNSAFE_KEYS, hostile_records, valid_data)

pytestmark = pytest.mark.hostile

_SAFE_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # applied with fullmatch: nothing may trail
_FUZZ = settings(max_examples=12, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])


def _decode(record):
    return events.decode(record.value, record.headers, record.kind, max_bytes=MAX_EVENT_BYTES)


@pytest.mark.parametrize("kind", events.KINDS)
def test_the_valid_starting_points_decode(kind):
    record = events.encode(kind, valid_data(kind), source="/tests")
    assert _decode(record).job_id == JOB


@pytest.mark.parametrize("kind, defect", [(kind, defect) for kind in events.KINDS for defect in sorted(DEFECTS)
                                          if kind in PIPELINE_KINDS or defect not in PIPELINE_ONLY_DEFECTS])
def test_a_malformed_event_is_refused_with_its_reason_and_nothing_else(kind, defect):
    strategy = hostile_records(kind, [defect])

    @_FUZZ
    @given(strategy)
    def check(hostile):
        with pytest.raises(InvalidInputError) as refused:
            _decode(hostile)
        assert (refused.value.reason, refused.value.status) == (hostile.reason, "failed"), refused.value
        assert refused.value.reason in REASONS
        assert len(refused.value.detail) <= 2000

    check()


@_FUZZ
@given(st.sampled_from(events.KINDS).flatmap(lambda kind: hostile_records(kind, rekey=True)))
def test_a_recovered_job_id_is_always_safe_inside_an_object_key(hostile):
    job_id = events.recover_job_id(hostile.key, hostile.value, hostile.headers)
    assert job_id is None or _SAFE_JOB_ID.fullmatch(job_id), repr(job_id)
    if job_id is not None:
        assert keys.check_job_id(job_id) == job_id


_ANY_HEADERS = st.lists(st.tuples(st.sampled_from(["ce_subject", "CE_SUBJECT", "ce_type", "x"]) | st.text(max_size=8),
                                  st.none() | st.binary(max_size=40) | st.sampled_from([k for k in UNSAFE_KEYS if k])),
                        max_size=6)
_ANY_VALUE = st.none() | st.binary(max_size=200) | st.builds(
    lambda job: json.dumps({"job_id": job}).encode(), st.sampled_from(UNSAFE_JOB_IDS) | st.text(max_size=70))


@settings(max_examples=300, deadline=None, database=None)
@given(st.sampled_from(UNSAFE_KEYS) | st.binary(max_size=80), _ANY_VALUE, _ANY_HEADERS)
def test_recovering_a_job_id_from_arbitrary_bytes_never_raises_and_never_returns_an_unsafe_id(key, value, headers):
    job_id = events.recover_job_id(key, value, headers)
    assert job_id is None or _SAFE_JOB_ID.fullmatch(job_id), repr(job_id)


# -- the defect classes that once got past the contract, as plain specifications ----------------------

def _uploaded_value(request_json: str = '{"concept":"BASIC"}', uploaded_at: str = "2026-01-02T03:04:05Z") -> bytes:
    return ('{"job_id":"j1","image_key":"uploads/j1/original.jpg","uploaded_at":"%s","request":%s,"timeline":{}}'
            % (uploaded_at, request_json)).encode()


_HEADERS = events.encode("uploaded", valid_data("uploaded", "j1"), source="/tests").headers


def _reason(value: bytes) -> str:
    with pytest.raises(InvalidInputError) as refused:
        events.decode(value, _HEADERS, "uploaded")
    return refused.value.reason


def test_deeply_nested_json_is_refused_instead_of_raising_recursion_error():
    assert _reason(_uploaded_value('{"x":' + "[" * 100_000 + "]" * 100_000 + "}")) == "event_not_json"
    assert events.recover_job_id(b"", b"[" * 100_000, []) is None


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused_because_no_json_reader_downstream_accepts_them(constant):
    assert _reason(_uploaded_value('{"guidance":%s}' % constant)) == "event_not_json"


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "\\udc80x"])
def test_lone_surrogates_are_refused_before_they_break_re_encoding(escape):
    assert _reason(_uploaded_value('{"scheduler":"%s"}' % escape)) == "event_not_json"


@pytest.mark.parametrize("data", [{"guidance": float("nan")}, {"scheduler": "\ud800"}])
def test_encode_refuses_values_it_cannot_write_as_json_with_an_invalid_input_error(data):
    with pytest.raises(InvalidInputError):
        events.encode("uploaded", {**valid_data("uploaded", "j1"), "request": data}, source="/tests")


@pytest.mark.parametrize("uploaded_at", ["2024-99-99T99:99:99Z", "0000-00-00T00:00:00Z", "2024-01-01T00:00:00+24:00"])
def test_timestamps_that_are_not_real_instants_are_refused(uploaded_at):
    assert _reason(_uploaded_value(uploaded_at=uploaded_at)) == "event_invalid"


def test_a_trailing_newline_does_not_slip_past_the_id_and_key_patterns():
    for field, value in (("job_id", "j1\n"), ("image_key", "uploads/j1/original.jpg\n"), ("uploaded_at", "2026-01-02T03:04:05Z\n")):
        with pytest.raises(InvalidInputError):
            events.validate("uploaded", {**valid_data("uploaded", "j1"), field: value})
    assert events.recover_job_id(b"j1\n", b"", []) is None
    with pytest.raises(InvalidInputError):
        keys.check_job_id("j1\n")
    with pytest.raises(InvalidInputError):
        keys.check_object_key("generated/j1/mix.png\n")

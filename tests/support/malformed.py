"""Hypothesis strategies for malformed Kafka records of every event kind.

Each strategy starts from a valid record (``events.encode``) and applies exactly one defect, so the
outcome is known by construction: ``Hostile.reason`` is the reason code ``events.decode`` must raise.
Job ids are the placeholder ``JOB``; ``Hostile.with_job_id`` swaps in a real one (integration tests
need one unique id per record).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cache
from importlib.resources import files

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from deskgen.common import events, topology

__all__ = ["JOB", "MAX_EVENT_BYTES", "REASONS", "PIPELINE_KINDS", "DEFECTS", "PIPELINE_ONLY_DEFECTS", "UNSAFE_JOB_IDS",
           "UNSAFE_IMAGE_KEYS", "UNSAFE_KEYS", "Hostile", "valid_data", "hostile_records", "sample"]

JOB = "JOBID"
MAX_EVENT_BYTES = 256 * 1024  # the limit the tests configure (DESKGEN_MAX_EVENT_BYTES)
REASONS = {"event_too_large", "event_headers_invalid", "event_type_unexpected", "event_not_json", "event_invalid"}
PIPELINE_KINDS = tuple(stage.consumes for stage in topology.STAGES.values())  # the kinds a stage reads
_REQUIRED_HEADERS = ("ce_specversion", "ce_id", "ce_source", "ce_type")

UNSAFE_JOB_IDS = (f"../{JOB}", f"/{JOB}", f"{JOB}/..", f"{JOB}/x", f"{JOB}\\..", f"{JOB}\n", f" {JOB}", f"-{JOB}",
                  f"{JOB}\x00", f"{JOB}%2f..", ".", "..", "", JOB * 13)
UNSAFE_IMAGE_KEYS = ("../../etc/passwd", "/etc/passwd", f"uploads//{JOB}/original.jpg", f"uploads/../{JOB}/x.jpg",
                     f"uploads/{JOB}/../../models/x", f"uploads/{JOB}/original.jpg\n", "..", f"uploads/{JOB}/..",
                     "C:\\Windows\\win.ini", f"uploads\\..\\{JOB}", "~/x.jpg", "s3://other-bucket/x.jpg",
                     "http://169.254.169.254/latest/meta-data", f"uploads/{JOB}/original.jpg\x00", "")
UNSAFE_KEYS = (None, b"", f"../{JOB}".encode(), f"/{JOB}".encode(), f"{JOB}\n".encode(), b"\xff\xfe" + JOB.encode(),
               f"{JOB}/../x".encode(), JOB.encode() * 13)
_IMPOSSIBLE_TIMES = ("2024-99-99T99:99:99Z", "0000-00-00T00:00:00Z", "2024-02-30T25:61:61+99:99",
                     "2024-01-01T00:00:00+24:00")


@dataclass(frozen=True)
class Hostile:
    """One malformed record and the reason code decoding it must raise."""

    kind: str
    defect: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    reason: str

    def with_job_id(self, job_id: str) -> "Hostile":
        placeholder, real = JOB.encode(), job_id.encode()

        def swap(raw):
            return raw.replace(placeholder, real) if isinstance(raw, bytes) else raw

        return replace(self, key=swap(self.key), value=swap(self.value),
                       headers=[(name, swap(raw)) for name, raw in self.headers])


# -- valid starting points -----------------------------------------------------------------------

_MODEL = {"name": "hostile-test", "version": "1"}


def valid_data(kind: str, job_id: str = JOB) -> dict:
    """A small valid ``data`` object of ``kind``."""
    at = "2026-01-02T03:04:05.678Z"
    pipeline = {"job_id": job_id, "image_key": f"uploads/{job_id}/original.jpg", "uploaded_at": at,
                "request": {"concept": "BASIC", "preset": "mix", "scheduler": "euler"}, "timeline": {}}
    stamp = {"received": at, "finished": at, "handle_ms": 1.5}
    classification = {"label": "desk", "score": 0.9, "threshold": 0.5, "model": _MODEL, "inference_ms": 2.0}
    captioning = {"captions": [{"prompt": "p", "text": "a desk"}], "keywords": [{"word": "desk", "count": 1}],
                  "prompt": "a desk", "negative_prompt": "blurry", "preset": "mix", "concept": "BASIC", "model": _MODEL}
    return {
        "uploaded": lambda: pipeline,
        "classified": lambda: {**pipeline, "timeline": {"classifier": stamp}, "classification": classification},
        "captioned": lambda: {**pipeline, "timeline": {"classifier": stamp, "captioner": stamp},
                              "classification": classification, "captioning": captioning},
        "generated": lambda: {"job_id": job_id, "status": "rejected", "reason": "not_desk", "detail": "score 0.1",
                              "stage": "classifier", "finished_at": at, "timeline": {"classifier": stamp}},
        "dlq": lambda: {"job_id": job_id, "stage": "classifier", "reason": "event_invalid", "detail": "bad",
                        "source": {"topic": "deskgen.uploaded", "partition": 0, "offset": 7}, "failed_at": at,
                        "payload_b64": "", "payload_truncated": False, "headers": {}},
    }[kind]()


@cache
def _schema(kind: str) -> dict:
    return json.loads((files("deskgen.common") / "schemas" / f"{kind}.json").read_text())


def _record(kind: str, data: dict) -> events.Record:
    return events.encode(kind, data, source="/tests/hostile")


def _dumps(data, *, ascii_only: bool = False) -> bytes:
    return json.dumps(data, ensure_ascii=ascii_only, separators=(",", ":")).encode()


_KEEP = object()  # "as in the valid record"


def _hostile(kind: str, defect: str, reason: str, *, data=_KEEP, value=_KEEP, headers=_KEEP) -> Hostile:
    record = _record(kind, valid_data(kind))
    if data is not _KEEP:
        value = _dumps(data)
    return Hostile(kind, defect, record.key, record.value if value is _KEEP else value,
                   list(record.headers) if headers is _KEEP else headers, reason)


# -- values of the wrong JSON type -----------------------------------------------------------------

_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                     | st.text(max_size=12), lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def _json_type(value) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value) if value is None else "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def _wrong_type(original, *, nullable: bool = False):
    return _JSON.filter(lambda v: _json_type(v) != _json_type(original) and not (nullable and v is None))


_REQUEST_TYPES = {"concept": "str", "preset": "str", "scheduler": "str", "steps": "number", "guidance": "number",
                  "width": "number", "height": "number", "seed": "number"}


def _huge_text(min_size: int = 2_001, max_size: int = 30_000):
    """A long string (repeated seed) that still fits MAX_EVENT_BYTES once JSON-escaped."""
    seeds = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=4)
    return st.builds(lambda seed, n: (seed * n)[:n], seeds, st.integers(min_size, max_size))


def _bounded_fields(kind: str) -> list[tuple[str, ...]]:
    if kind in PIPELINE_KINDS:
        return [("job_id",), ("image_key",), ("uploaded_at",), ("request", "scheduler"), ("request", "concept")]
    if kind == "generated":
        return [("job_id",), ("stage",), ("reason",), ("detail",), ("finished_at",)]
    return [("job_id",), ("stage",), ("reason",), ("detail",), ("failed_at",)]


def _set(data: dict, path: tuple[str, ...], value) -> dict:
    data = json.loads(json.dumps(data))
    target = data
    for name in path[:-1]:
        target = target[name]
    target[path[-1]] = value
    return data


# -- the defects -------------------------------------------------------------------------------------
# Each takes the kind and returns a strategy of Hostile records.

def _missing_field(kind):
    return st.sampled_from(_schema(kind)["required"]).map(
        lambda name: _hostile(kind, "missing_field", "event_invalid",
                              data={k: v for k, v in valid_data(kind).items() if k != name}))


def _extra_field(kind):
    names = st.text(min_size=1, max_size=24).filter(lambda n: n not in _schema(kind)["properties"])
    return st.tuples(names, _JSON).map(
        lambda nv: _hostile(kind, "extra_field", "event_invalid", data={**valid_data(kind), nv[0]: nv[1]}))


def _extra_request_field(kind):
    names = st.text(min_size=1, max_size=24).filter(lambda n: n not in _REQUEST_TYPES)
    return st.tuples(names, _JSON).map(
        lambda nv: _hostile(kind, "extra_request_field", "event_invalid",
                            data=_set(valid_data(kind), ("request", nv[0]), nv[1])))


@st.composite
def _wrong_type_field(draw, kind):
    data = valid_data(kind)
    name = draw(st.sampled_from(sorted(data)))
    value = draw(_wrong_type(data[name], nullable=(kind, name) == ("dlq", "job_id")))
    return _hostile(kind, "wrong_type", "event_invalid", data={**data, name: value})


@st.composite
def _wrong_type_request(draw, kind):
    name = draw(st.sampled_from(sorted(_REQUEST_TYPES)))
    wanted = _REQUEST_TYPES[name]
    value = draw(_JSON.filter(lambda v: _json_type(v) != wanted))
    return _hostile(kind, "wrong_type_request", "event_invalid", data=_set(valid_data(kind), ("request", name), value))


@st.composite
def _huge_string(draw, kind):
    path = draw(st.sampled_from(_bounded_fields(kind)))
    return _hostile(kind, "huge_string", "event_invalid", data=_set(valid_data(kind), path, draw(_huge_text())))


def _root_not_object(kind):
    roots = _JSON.filter(lambda v: not isinstance(v, dict))
    return roots.map(lambda root: _hostile(kind, "root_not_object", "event_invalid", data=root))


def _unsafe_job_id(kind):
    return st.sampled_from(UNSAFE_JOB_IDS).map(
        lambda job: _hostile(kind, "unsafe_job_id", "event_invalid", data={**valid_data(kind), "job_id": job}))


def _unsafe_image_key(kind):
    return st.sampled_from(UNSAFE_IMAGE_KEYS).map(
        lambda key: _hostile(kind, "unsafe_image_key", "event_invalid", data={**valid_data(kind), "image_key": key}))


def _impossible_time(kind):
    field = {"generated": "finished_at", "dlq": "failed_at"}.get(kind, "uploaded_at")
    return st.sampled_from(_IMPOSSIBLE_TIMES).map(
        lambda at: _hostile(kind, "impossible_time", "event_invalid", data={**valid_data(kind), field: at}))


def _not_json(kind):
    def unparsable(raw: bytes) -> bool:
        try:
            json.loads(raw)
        except (ValueError, RecursionError):
            return True
        return False

    garbage = st.binary(max_size=300).filter(lambda raw: raw and unparsable(raw))
    text = st.text(max_size=200).map(str.encode).filter(lambda raw: raw and unparsable(raw))
    return (garbage | text).map(lambda raw: _hostile(kind, "not_json", "event_not_json", value=raw))


@st.composite
def _truncated_json(draw, kind):
    value = _record(kind, valid_data(kind)).value
    cut = draw(st.integers(0, len(value) - 1))
    return _hostile(kind, "truncated_json", "event_not_json", value=value[:cut] or None)


@st.composite
def _invalid_utf8(draw, kind):
    value = _record(kind, valid_data(kind)).value
    at = draw(st.integers(0, len(value)))
    bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf"]))
    return _hostile(kind, "invalid_utf8", "event_not_json", value=value[:at] + bad + value[at:])


def _deep_nesting(kind):
    def nested(depth: int) -> bytes:
        head = _dumps(valid_data(kind))[:-1]  # the object without its closing brace
        return head + b',"nest":' + b"[" * depth + b"]" * depth + b"}"

    return st.integers(2_000, 100_000).map(lambda depth: _hostile(kind, "deep_nesting", "event_not_json",
                                                                   value=nested(depth)))


def _free_number_path(kind) -> tuple[str, ...]:
    return {"generated": ("timeline", "classifier", "handle_ms"), "dlq": ("source", "offset")}.get(
        kind, ("request", "guidance"))


def _non_finite_number(kind):
    def with_constant(constant: str) -> bytes:
        marker = 987654.321
        return _dumps(_set(valid_data(kind), _free_number_path(kind), marker)).replace(
            str(marker).encode(), constant.encode())

    return st.sampled_from(["NaN", "Infinity", "-Infinity"]).map(
        lambda c: _hostile(kind, "non_finite_number", "event_not_json", value=with_constant(c)))


def _lone_surrogate(kind):
    path = ("request", "scheduler") if kind in PIPELINE_KINDS else ("detail",)
    surrogates = st.integers(0xD800, 0xDFFF).map(chr)
    return surrogates.map(lambda s: _hostile(kind, "lone_surrogate", "event_not_json",
                                             value=_dumps(_set(valid_data(kind), path, f"x{s}y"), ascii_only=True)))


def _oversize(kind):
    def padded(extra: int) -> bytes:
        return _dumps({**valid_data(kind), "padding": "x" * (MAX_EVENT_BYTES + extra)})

    return st.integers(1, 64 * 1024).map(lambda extra: _hostile(kind, "oversize", "event_too_large", value=padded(extra)))


def _headers_without(kind, name):
    return [(n, v) for n, v in _record(kind, valid_data(kind)).headers if n != name]


def _missing_header(kind):
    return st.sampled_from(_REQUIRED_HEADERS).map(
        lambda name: _hostile(kind, "missing_header", "event_headers_invalid", headers=_headers_without(kind, name)))


def _blank_header(kind):
    return st.tuples(st.sampled_from(_REQUIRED_HEADERS), st.sampled_from([b"", None])).map(
        lambda nv: _hostile(kind, "blank_header", "event_headers_invalid",
                            headers=_headers_without(kind, nv[0]) + [nv]))


def _header_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")[:512]


def _wrong_specversion(kind):
    versions = (st.sampled_from([b"0.3", b"1.1", b"2.0", b" 1.0", b"1.0\n", b"1", b"v1.0"])
                | st.binary(min_size=1, max_size=16)).filter(lambda raw: _header_text(raw) not in ("", "1.0"))
    return versions.map(lambda raw: _hostile(kind, "wrong_specversion", "event_headers_invalid",
                                             headers=_headers_without(kind, "ce_specversion")
                                             + [("ce_specversion", raw)]))


def _wrong_ce_type(kind):
    own = events.CE_TYPES[kind]
    variants = [events.CE_TYPES[k] for k in events.KINDS if k != kind] + [f"{own}.v2", f"{own};version=2", own.upper(),
                                                                          f"{own} ", "com.deskgen.photo.deleted"]
    types = (st.sampled_from(variants).map(str.encode) | st.binary(min_size=1, max_size=40)
             | _huge_text(600, 100_000).map(str.encode)).filter(lambda raw: _header_text(raw) not in ("", own))
    return types.map(lambda raw: _hostile(kind, "wrong_ce_type", "event_type_unexpected",
                                          headers=_headers_without(kind, "ce_type") + [("ce_type", raw)]))


def _wrong_content_type(kind):
    types = (st.sampled_from(["text/plain", "application/xml", "application/cloudevents+json", "image/jpeg", "",
                              "application/jso", "APPLICATION/JSON"]) | st.text(max_size=40)).filter(
        lambda text: not text.startswith("application/json"))
    return types.map(lambda text: _hostile(kind, "wrong_content_type", "event_headers_invalid",
                                           headers=_headers_without(kind, "content-type")
                                           + [("content-type", text.encode())]))


DEFECTS = {
    "missing_field": _missing_field, "extra_field": _extra_field, "extra_request_field": _extra_request_field,
    "wrong_type": _wrong_type_field, "wrong_type_request": _wrong_type_request, "huge_string": _huge_string,
    "root_not_object": _root_not_object, "unsafe_job_id": _unsafe_job_id, "unsafe_image_key": _unsafe_image_key,
    "impossible_time": _impossible_time, "not_json": _not_json, "truncated_json": _truncated_json,
    "invalid_utf8": _invalid_utf8, "deep_nesting": _deep_nesting, "non_finite_number": _non_finite_number,
    "lone_surrogate": _lone_surrogate, "oversize": _oversize, "missing_header": _missing_header,
    "blank_header": _blank_header, "wrong_specversion": _wrong_specversion, "wrong_ce_type": _wrong_ce_type,
    "wrong_content_type": _wrong_content_type,
}
PIPELINE_ONLY_DEFECTS = {"extra_request_field", "wrong_type_request", "unsafe_image_key"}  # need request, image key


def hostile_records(kind: str, defects=None, *, rekey: bool = False):
    """Malformed records of ``kind``, one defect each (every applicable defect unless ``defects`` names some).

    With ``rekey`` the Kafka key is sometimes missing or unsafe and ``ce_subject`` gone, so the job id may be
    unrecoverable (then only ``data.job_id`` can name it).
    """
    names = [name for name in (defects or DEFECTS) if kind in PIPELINE_KINDS or name not in PIPELINE_ONLY_DEFECTS]
    records = st.one_of([DEFECTS[name](kind) for name in names])
    if not rekey:
        return records
    def rekeyed(record: Hostile, key) -> Hostile:
        if key is _KEEP:
            return record
        return replace(record, key=key, headers=[(n, v) for n, v in record.headers if n != "ce_subject"])

    return st.builds(rekeyed, records, st.sampled_from([_KEEP, *UNSAFE_KEYS]))


def sample(strategy, count: int) -> list:
    """Up to ``count`` examples of ``strategy``, the same on every run (derandomized, no example database)."""
    found: list = []

    @settings(max_examples=count, database=None, derandomize=True, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(example):
        found.append(example)

    collect()
    return found

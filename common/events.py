"""The event contract: CloudEvents 1.0 in Kafka binary content mode, one JSON Schema per kind.

Kinds and their topics (prefix configurable) come from the topology (``common/topology.py``): each
stage's input and output (``uploaded`` ... ``generated``, the terminal result), then ``dlq``. Kafka key = job id; data is UTF-8 JSON;
CloudEvents attributes travel as ``ce_*`` headers, with a W3C ``traceparent`` header beside them.
Schemas (``common/schemas/<kind>.json``) are enforced on consume and on produce.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cache
from importlib.resources import files
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from referencing import Registry, Resource

from .errors import InvalidInputError
from .topology import event_kinds, event_types

__all__ = ["Event", "Record", "KINDS", "CATALOGUE_KIND", "CE_TYPES", "encode", "decode", "validate", "now", "recover_job_id",
           "child_traceparent", "JOB_ID"]

KINDS = event_kinds()
CATALOGUE_KIND = "products"  # topic <prefix>products: compacted, key = product id, events of kind "product"
_SCHEMAS = files("deskgen.common") / "schemas"
# The job id pattern has one source, the schema; object keys (keys.py) use the same.
JOB_ID = re.compile(json.loads((_SCHEMAS / "defs.json").read_text())["$defs"]["job_id"]["pattern"])

CE_TYPES = {
    **event_types(),
    "dlq": "com.deskgen.dlq.record",
    "product": "com.deskgen.product.upserted",  # the catalogue (common/catalogue/), not a pipeline kind
}
_KIND_OF_TYPE = {v: k for k, v in CE_TYPES.items()}
_REQUIRED_ATTRS = ("ce_specversion", "ce_id", "ce_source", "ce_type")
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@dataclass(frozen=True)
class Event:
    """One decoded, validated event.

    ``data`` always holds ``job_id``; pipeline events also hold ``image_key``, ``uploaded_at``,
    ``request`` (concept, preset, generation options) and ``timeline``, plus one section per stage
    that has run (``classification``, ``captioning``).
    """

    kind: str
    id: str
    source: str
    time: str
    data: dict[str, Any]
    traceparent: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    @property
    def job_id(self) -> str:
        return self.data["job_id"]


@dataclass(frozen=True)
class Record:
    """An encoded event, ready for ``Producer.produce``."""

    kind: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def now() -> str:
    """The current UTC time as RFC 3339 with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ecma_pattern(validator, pattern: str, instance: Any, schema: dict):
    """``pattern`` with ECMA-262 semantics: ``$`` is the end of the string (in Python's ``re`` it also
    matches before a trailing newline, which would let ``"job-1\\n"`` through)."""
    if validator.is_type(instance, "string") and not re.search(re.sub(r"(?<!\\)\$", r"\\Z", pattern), instance):
        yield ValidationError(f"{instance!r:.80} does not match {pattern!r}")


_FORMATS = FormatChecker(())


@_FORMATS.checks("date-time", raises=ValueError)
def _is_instant(value: Any) -> bool:
    """A timestamp must name a real instant (the pattern alone admits month 99 or offset +24:00)."""
    return not isinstance(value, str) or bool(datetime.fromisoformat(value.replace("Z", "+00:00")))


_Validator = validators.extend(Draft202012Validator, {"pattern": _ecma_pattern})


@cache
def _validator(kind: str) -> Draft202012Validator:
    folder = _SCHEMAS
    resources = []
    for name in ("defs", "product", *KINDS):  # product.json: the category vocabulary
        schema = json.loads((folder / f"{name}.json").read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
        resources.append((f"{name}.json", Resource.from_contents(schema)))
    registry = Registry().with_resources(resources)
    schema = json.loads((folder / f"{kind}.json").read_text())
    return _Validator(schema, registry=registry, format_checker=_FORMATS)


def validate(kind: str, data: Any) -> None:
    """Raise InvalidInputError(event_invalid) naming the first problems if ``data`` breaks the schema."""
    errors = sorted(_validator(kind).iter_errors(data), key=lambda e: list(e.absolute_path))
    if not errors and isinstance(data, dict) and isinstance(data.get("image_key"), str) and kind != "dlq" \
            and not data["image_key"].startswith(f"uploads/{data.get('job_id')}/"):
        raise InvalidInputError("event_invalid", f"{kind}: image_key {data['image_key']!r:.120} is not under "
                                f"uploads/<job_id>/", status="failed")
    if errors:
        problems = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:160]}" for e in errors[:3])
        raise InvalidInputError("event_invalid", f"{kind}: {problems}", status="failed")


def child_traceparent(parent: str | None) -> str:
    """A traceparent for the next hop: same trace id, new span id (a fresh trace if none)."""
    match = _TRACEPARENT.match(parent or "")
    trace_id = match.group(1) if match else secrets.token_hex(16)
    return f"00-{trace_id}-{secrets.token_hex(8)}-01"


def encode(kind: str, data: dict[str, Any], *, source: str, traceparent: str | None = None,
           key: str | None = None) -> Record:
    """Validate ``data`` and build the Kafka record (key and ``ce_subject`` = ``key``, default the job id;
    ``ce_*`` headers, JSON value)."""
    validate(kind, data)
    job_id = key or data.get("job_id")
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", str(uuid.uuid4()).encode()),
        ("ce_source", source.encode()),
        ("ce_type", CE_TYPES[kind].encode()),
        ("ce_time", now().encode()),
        ("content-type", b"application/json"),
        ("traceparent", child_traceparent(traceparent).encode()),
    ]
    if job_id:
        headers.append(("ce_subject", job_id.encode()))
    try:
        value = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except ValueError as exc:  # NaN/Infinity or a lone surrogate: not writable as UTF-8 JSON
        raise InvalidInputError("event_invalid", f"{kind}: {exc}"[:300], status="failed") from None
    return Record(kind, (job_id or "").encode(), value, headers)


def decode(value: bytes | None, headers: list[tuple[str, bytes]] | None, expected_kind: str,
           *, max_bytes: int = 1024 * 1024) -> Event:
    """Parse and validate one consumed record; raise InvalidInputError(reason) on any defect.

    Reasons: ``event_too_large``, ``event_headers_invalid``, ``event_type_unexpected``,
    ``event_not_json``, ``event_invalid`` (schema).
    """
    if value is not None and len(value) > max_bytes:
        raise InvalidInputError("event_too_large", f"{len(value)} bytes exceeds {max_bytes}", status="failed")
    attrs = _headers(headers)
    missing = [name for name in _REQUIRED_ATTRS if not attrs.get(name)]
    if missing:
        raise InvalidInputError("event_headers_invalid", f"missing CloudEvents headers {missing}", status="failed")
    if attrs["ce_specversion"] != "1.0":
        raise InvalidInputError("event_headers_invalid", f"ce_specversion {attrs['ce_specversion']!r:.20} is not 1.0", status="failed")
    if _KIND_OF_TYPE.get(attrs["ce_type"]) != expected_kind:
        raise InvalidInputError("event_type_unexpected",
                                f"ce_type {attrs['ce_type']!r:.80} on a topic for {CE_TYPES[expected_kind]}", status="failed")
    content_type = attrs.get("content-type", "application/json")
    if not content_type.startswith("application/json"):
        raise InvalidInputError("event_headers_invalid", f"content-type {content_type!r:.60} is not JSON", status="failed")
    try:
        data = _strict_json(value or b"")
    except (ValueError, RecursionError) as exc:
        raise InvalidInputError("event_not_json", f"{type(exc).__name__}: {exc}"[:200], status="failed") from None
    validate(expected_kind, data)
    traceparent = attrs.get("traceparent")
    return Event(kind=expected_kind, id=attrs["ce_id"], source=attrs["ce_source"], time=attrs.get("ce_time", ""),
                 data=data, traceparent=traceparent if traceparent and _TRACEPARENT.match(traceparent) else None)


def recover_job_id(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None) -> str | None:
    """Best effort job id of a malformed record: Kafka key, then ``ce_subject``, then ``data.job_id``."""
    candidates = [key.decode("utf-8", "replace") if key else None, _headers(headers).get("ce_subject")]
    try:
        data = _strict_json(value or b"")
        candidates.append(data.get("job_id") if isinstance(data, dict) else None)
    except (ValueError, RecursionError):
        pass
    return next((c for c in candidates if isinstance(c, str) and JOB_ID.fullmatch(c)), None)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _strict_json(value: bytes) -> Any:
    """RFC 8259 JSON in UTF-8: no NaN/Infinity, no lone surrogates (they cannot be written back as
    UTF-8). Raises ValueError, or RecursionError when nested too deeply."""
    data = json.loads(value.decode("utf-8"), parse_constant=_refuse_constant)
    json.dumps(data, ensure_ascii=False).encode("utf-8")
    return data


def _headers(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    result = {}
    for name, raw in headers or ():
        if isinstance(raw, (bytes, bytearray)):
            result[name.lower()] = bytes(raw).decode("utf-8", "replace")[:512]
    return result

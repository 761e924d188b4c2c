"""The event contract: CloudEvents 1.0 in Kafka binary content mode, one JSON Schema per kind.

Kinds and their topics (prefix configurable): ``uploaded``, ``classified``, ``captioned``,
``generated`` (the terminal result) and ``dlq``. Kafka key = job id; data is UTF-8 JSON;
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

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from .errors import InvalidInputError

__all__ = ["Event", "Record", "KINDS", "CE_TYPES", "encode", "decode", "validate", "now", "recover_job_id",
           "child_traceparent"]

KINDS = ("uploaded", "classified", "captioned", "generated", "dlq")

CE_TYPES = {
    "uploaded": "com.deskgen.photo.uploaded",
    "classified": "com.deskgen.photo.classified",
    "captioned": "com.deskgen.photo.captioned",
    "generated": "com.deskgen.job.finished",
    "dlq": "com.deskgen.dlq.record",
}
_KIND_OF_TYPE = {v: k for k, v in CE_TYPES.items()}
_REQUIRED_ATTRS = ("ce_specversion", "ce_id", "ce_source", "ce_type")
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


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


@cache
def _validator(kind: str) -> Draft202012Validator:
    folder = files("deskgen.common") / "schemas"
    resources = []
    for name in ("defs", *KINDS):
        schema = json.loads((folder / f"{name}.json").read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
        resources.append((f"{name}.json", Resource.from_contents(schema)))
    registry = Registry().with_resources(resources)
    schema = json.loads((folder / f"{kind}.json").read_text())
    return Draft202012Validator(schema, registry=registry)


def validate(kind: str, data: Any) -> None:
    """Raise InvalidInputError(event_invalid) naming the first problems if ``data`` breaks the schema."""
    errors = sorted(_validator(kind).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        problems = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:160]}" for e in errors[:3])
        raise InvalidInputError("event_invalid", f"{kind}: {problems}", status="failed")


def child_traceparent(parent: str | None) -> str:
    """A traceparent for the next hop: same trace id, new span id (a fresh trace if none)."""
    match = _TRACEPARENT.match(parent or "")
    trace_id = match.group(1) if match else secrets.token_hex(16)
    return f"00-{trace_id}-{secrets.token_hex(8)}-01"


def encode(kind: str, data: dict[str, Any], *, source: str, traceparent: str | None = None) -> Record:
    """Validate ``data`` and build the Kafka record (key = job id, ``ce_*`` headers, JSON value)."""
    validate(kind, data)
    job_id = data.get("job_id")
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
    value = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
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
        data = json.loads(value or b"")
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInputError("event_not_json", f"{type(exc).__name__}: {exc}"[:200], status="failed") from None
    validate(expected_kind, data)
    traceparent = attrs.get("traceparent")
    return Event(kind=expected_kind, id=attrs["ce_id"], source=attrs["ce_source"], time=attrs.get("ce_time", ""),
                 data=data, traceparent=traceparent if traceparent and _TRACEPARENT.match(traceparent) else None)


def recover_job_id(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None) -> str | None:
    """Best effort job id of a malformed record: Kafka key, then ``ce_subject``, then ``data.job_id``."""
    candidates = [key.decode("utf-8", "replace") if key else None, _headers(headers).get("ce_subject")]
    try:
        data = json.loads(value or b"")
        candidates.append(data.get("job_id") if isinstance(data, dict) else None)
    except (UnicodeDecodeError, ValueError):
        pass
    return next((c for c in candidates if isinstance(c, str) and _JOB_ID.match(c)), None)


def _headers(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    result = {}
    for name, raw in headers or ():
        if isinstance(raw, (bytes, bytearray)):
            result[name.lower()] = bytes(raw).decode("utf-8", "replace")[:512]
    return result

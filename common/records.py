"""Outcome → records: what one handled event turns into, with no broker and no clock but ``events.now``.

An ``Emit`` becomes the stage's next event (or, for the last stage, a ``succeeded`` result); a ``Reject``
a ``rejected`` result; an ``InvalidInputError`` a DLQ record plus a terminal result when the job id is
known. An output that breaks the event contract turns the job into a ``failed`` one instead.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Callable

from confluent_kafka import Message, TopicPartition

from . import events
from .errors import InvalidInputError
from .events import Event, Record
from .stage import Emit, Reject, Stage

__all__ = ["Item", "build_records", "dlq_record", "commit_offsets", "first_offsets", "DECODE_REASONS",
           "RUNTIME_REASONS"]

DLQ_PAYLOAD_BYTES = 64 * 1024
# The reasons ``events.decode`` gives a record it refuses (tests/unit/common/test_catalogue_index.py checks them).
DECODE_REASONS = ("event_too_large", "event_headers_invalid", "event_type_unexpected", "event_not_json", "event_invalid")
# The DLQ reasons the runtime itself gives, whatever the stage, each ending the job as failed: an undecodable
# event, a stage's unexpected exception or broken output, retries used up, an event that kept killing the process.
RUNTIME_REASONS = (*DECODE_REASONS, "stage_error", "stage_output_invalid", "retries_exhausted", "stage_crashed")


@dataclass
class Item:
    """One consumed message on its way through a batch."""

    message: Message
    received: str
    event: Event | None = None
    outcome: Emit | Reject | InvalidInputError | None = None
    attempts: int = 0
    handle_ms: float = 0.0
    blob_write_ms: float = 0.0
    records: list[tuple[str, Record]] = field(default_factory=list)

    @property
    def job_id(self) -> str | None:
        """The job id, recovered from a key or payload that did not decode where possible."""
        if self.event is not None:
            return self.event.job_id
        return events.recover_job_id(self.message.key(), self.message.value(), self.message.headers())


def build_records(item: Item, stage: Stage, topic: Callable[[str], str]) -> list[tuple[str, Record]]:
    """Set ``item.records`` from its outcome (and, if an output is invalid, its outcome to failed)."""
    item.records = []
    source = f"/deskgen/{stage.name}"
    event = item.event
    timeline = dict(event.data.get("timeline", {})) if event else {}
    timeline[stage.name] = {"received": item.received, "finished": events.now(), "handle_ms": round(item.handle_ms, 2),
                            "blob_write_ms": round(item.blob_write_ms, 2), "attempts": max(item.attempts, 1)}
    traceparent = event.traceparent if event else None
    carried = {k: v for k, v in event.data.items() if k != "timeline"} if event else {}

    def result(status: str, data: dict[str, Any], reason: str | None = None, detail: str = "") -> bool:
        body = {**data, "job_id": item.job_id, "status": status, "stage": stage.name, "finished_at": events.now(),
                "timeline": timeline}
        if reason:
            body.update(reason=reason, detail=detail[:2000])
        try:
            record = events.encode("generated", body, source=source, traceparent=traceparent)
        except InvalidInputError as exc:
            if status == "succeeded":
                item.outcome = InvalidInputError("stage_output_invalid", exc.detail, status="failed")
                return False
            minimal = {"job_id": item.job_id, "status": status, "stage": stage.name, "finished_at": body["finished_at"],
                       "timeline": {}, "reason": reason or "result_invalid", "detail": detail[:2000]}
            record = events.encode("generated", minimal, source=source, traceparent=traceparent)
        item.records.append((topic("generated"), record))
        return True

    outcome = item.outcome
    if isinstance(outcome, Emit):
        if stage.produces == "generated":
            if result("succeeded", {**carried, stage.section: outcome.section}):
                return item.records
        else:
            data = {**carried, "timeline": timeline, stage.section: outcome.section}
            try:
                item.records.append((topic(stage.produces),
                                     events.encode(stage.produces, data, source=source, traceparent=traceparent)))
                return item.records
            except InvalidInputError as exc:  # the stage broke the contract: the job fails, visibly
                item.outcome = InvalidInputError("stage_output_invalid", exc.detail, status="failed")
    outcome = item.outcome
    if isinstance(outcome, Reject):
        data = {**carried, **({stage.section: outcome.section} if outcome.section else {})}
        result("rejected", data, outcome.reason, outcome.detail)
        return item.records
    item.records.append((topic("dlq"), dlq_record(item.message, outcome, stage.name, item.job_id)))
    if item.job_id is not None:
        result(outcome.status, carried, outcome.reason, outcome.detail)
    return item.records


def dlq_record(message: Message, error: InvalidInputError, stage_name: str, job_id: str | None = None) -> Record:
    """The dead-letter record of a consumed record (an event, or a table's row): why it failed and the
    original bytes (truncated at 64 KiB)."""
    value = message.value() or b""
    data = {
        "job_id": job_id, "stage": stage_name, "reason": error.reason, "detail": error.detail[:2000],
        "status": error.status,
        "source": {"topic": message.topic(), "partition": message.partition(), "offset": message.offset()},
        "failed_at": events.now(),
        "key_b64": base64.b64encode(message.key()).decode() if message.key() else None,
        "headers": {name: (raw or b"").decode("utf-8", "replace")[:512] for name, raw in (message.headers() or [])[:32]},
        "payload_b64": base64.b64encode(value[:DLQ_PAYLOAD_BYTES]).decode(),
        "payload_truncated": len(value) > DLQ_PAYLOAD_BYTES,
    }
    return events.encode("dlq", data, source=f"/deskgen/{stage_name}")


def commit_offsets(items: list[Item]) -> list[TopicPartition]:
    """The offsets a batch commits: one past its last message, per partition."""
    after: dict[tuple[str, int], int] = {}
    for item in items:
        key = (item.message.topic(), item.message.partition())
        after[key] = max(after.get(key, 0), item.message.offset() + 1)
    return [TopicPartition(t, p, o) for (t, p), o in after.items()]


def first_offsets(items: list[Item]) -> dict[tuple[str, int], int]:
    """Each partition's first offset in a batch: where an aborted batch resumes."""
    first: dict[tuple[str, int], int] = {}
    for item in items:
        key = (item.message.topic(), item.message.partition())
        first[key] = min(first.get(key, item.message.offset()), item.message.offset())
    return first

"""Error → outcome policy and retries around a real in-process stage, with no broker and no S3."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import Message

from deskgen.common import events
from deskgen.common.crashes import CrashLedger
from deskgen.common.errors import DeskgenError, FatalError, InvalidInputError, TransientError
from deskgen.common.handling import Handled, Handler, normalised, outcome_of_error
from deskgen.common.records import Item
from deskgen.common.retry import Backoff
from deskgen.common.settings import ImageSettings
from deskgen.common.stage import Emit, Reject, Stage


def test_invalid_input_and_transient_errors_are_kept_as_they_are():
    invalid, transient = InvalidInputError("image_undecodable"), TransientError("s3 down")
    assert outcome_of_error(invalid) is invalid and outcome_of_error(transient) is transient


def test_a_bug_in_the_stage_fails_the_job_at_once_as_stage_error():
    outcome = outcome_of_error(ZeroDivisionError("division by zero"))
    assert (outcome.reason, outcome.status) == ("stage_error", "failed")
    assert outcome.detail == "ZeroDivisionError: division by zero"


def test_another_deskgen_error_fails_the_job_with_its_message():
    outcome = outcome_of_error(DeskgenError("model refused"))
    assert (outcome.reason, outcome.status, outcome.detail) == ("stage_error", "failed", "model refused")


def test_a_fatal_error_stops_the_process():
    with pytest.raises(FatalError):
        outcome_of_error(FatalError("fenced"))
    with pytest.raises(FatalError):
        normalised(FatalError("fenced"))


def test_a_batch_answer_that_is_not_an_outcome_fails_that_job():
    assert normalised(Reject("not_desk")).reason == "not_desk"
    assert normalised("a string").reason == "stage_error"


class _Flaky(Stage):
    """Fails transiently ``failures`` times per event, then emits; records how often it was called."""

    name = "classifier"

    def __init__(self, failures: int):
        self.failures, self.calls = failures, 0

    def handle(self, event, blobs):
        self.calls += 1
        if self.calls <= self.failures:
            raise TransientError("s3 briefly away")
        return Emit({"ok": True})


def _items(count: int) -> list[Item]:
    items = []
    for n in range(count):
        data = {"job_id": f"job-{n}", "image_key": f"uploads/job-{n}/original.jpg", "uploaded_at": events.now(),
                "request": {}, "timeline": {}}
        record = events.encode("uploaded", data, source="/tests")
        item = Item(Message(topic="t.uploaded", partition=0, offset=n, key=record.key, value=record.value), "")
        item.event = events.decode(record.value, record.headers, "uploaded")
        items.append(item)
    return items


def _handler(stage: Stage, tmp_path, *, attempts: int = 3, delay_s: float = 0.001,
             stop: threading.Event | None = None) -> Handler:
    return Handler(stage, store=None, images=ImageSettings(), backoff=Backoff(attempts, delay_s, delay_s),
                   crashes=CrashLedger(tmp_path / "crashes.json", 5), stop=stop or threading.Event())


def test_a_transient_failure_is_retried_until_it_succeeds(tmp_path):
    [item] = _items(1)
    assert _handler(_Flaky(failures=2), tmp_path).handle_all([item]) is Handled.DONE
    assert isinstance(item.outcome, Emit) and item.attempts == 3


def test_retries_end_as_a_failed_job(tmp_path):
    [item] = _items(1)
    assert _handler(_Flaky(failures=9), tmp_path, attempts=2).handle_all([item]) is Handled.DONE
    assert (item.outcome.reason, item.outcome.status) == ("retries_exhausted", "failed")


def test_a_stop_during_the_retry_backoff_leaves_the_batch_unhandled(tmp_path):
    stop = threading.Event()
    stop.set()
    [item] = _items(1)
    handler = _handler(_Flaky(failures=9), tmp_path, delay_s=60, stop=stop)
    assert handler.handle_all([item]) is Handled.STOPPED
    assert item.outcome is None


def test_every_item_of_a_batch_gets_the_time_of_the_one_stage_call(tmp_path):
    items = _items(3)
    assert _handler(_Flaky(failures=0), tmp_path).handle_all(items) is Handled.DONE
    # handle_ms is the stage call; the blob writes of earlier items (blob_write_ms) are not part of it
    assert len({item.handle_ms for item in items}) == 1


def test_a_crash_in_one_event_of_the_default_batch_fails_only_that_event(tmp_path):
    class _OneBad(Stage):
        name = "classifier"

        def handle(self, event, blobs):
            if event.job_id == "job-1":
                raise KeyError("image_key")
            return Emit({"ok": True})

    items = _items(3)
    _handler(_OneBad(), tmp_path).handle_all(items)
    assert [type(i.outcome).__name__ for i in items] == ["Emit", "InvalidInputError", "Emit"]
    assert items[1].outcome.reason == "stage_error"

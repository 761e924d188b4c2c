"""Calling the stage: error → outcome policy, retries with backoff, and the blob writes of an ``Emit``.

Policy: ``InvalidInputError`` and ``Reject`` end the job; ``TransientError`` is retried with bounded
backoff and ends the job as ``retries_exhausted``; any other exception is a bug or a model crash and
ends the job as ``stage_error`` at once (never retried, so a poison job cannot loop); ``FatalError``
stops the process.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
import traceback
from typing import Any

from . import metrics
from .crashes import CrashLedger
from .errors import DeskgenError, FatalError, InvalidInputError, TransientError
from .events import Event
from .imaging import decode_image
from .keys import GENERATED, check_object_key
from .records import Item
from .retry import Backoff
from .settings import ImageSettings
from .stage import Emit, Reject, Stage
from .storage import ObjectStore

__all__ = ["JobBlobs", "Handler", "Handled", "outcome_of_error", "normalised"]

log = logging.getLogger("deskgen.runtime")


def outcome_of_error(exc: BaseException) -> InvalidInputError | TransientError:
    """What an exception raised by a stage means for its job; a ``FatalError`` is raised again."""
    if isinstance(exc, FatalError):
        raise exc
    if isinstance(exc, (InvalidInputError, TransientError)):
        return exc
    if isinstance(exc, DeskgenError):
        return InvalidInputError("stage_error", str(exc), status="failed")
    return InvalidInputError("stage_error", f"{type(exc).__name__}: {exc}"[:500], status="failed")


def normalised(outcome: Any) -> Emit | Reject | InvalidInputError | TransientError:
    """One item of ``handle_batch``'s answer as an outcome (an exception in place goes through the policy)."""
    if isinstance(outcome, (Emit, Reject)):
        return outcome
    if isinstance(outcome, BaseException):
        return outcome_of_error(outcome)
    return InvalidInputError("stage_error", f"{type(outcome).__name__}: {outcome}"[:500], status="failed")


class JobBlobs:
    """The stage's read access to objects: checked keys, size limit, the shared decoder."""

    def __init__(self, store: ObjectStore, images: ImageSettings):
        self._store, self._images = store, images

    def read(self, key: str) -> bytes:
        return self._store.get(check_object_key(key), max_bytes=self._images.max_bytes)

    def image(self, key: str):
        return decode_image(self.read(key), self._images)


class Handled(enum.Enum):
    DONE = "done"
    STOPPED = "stopped"  # a stop arrived during a retry backoff: the batch is redelivered


class Handler:
    """Hands events to the stage, retries transient failures and writes the blobs of each ``Emit``."""

    def __init__(self, stage: Stage, store: ObjectStore, images: ImageSettings, backoff: Backoff,
                 crashes: CrashLedger, stop: threading.Event):
        self.stage, self.store, self.backoff, self.crashes, self.stop = stage, store, backoff, crashes, stop
        self.blobs = JobBlobs(store, images)

    def handle_all(self, items: list[Item]) -> Handled:
        """Give every item an outcome, retrying transient failures with backoff."""
        pending = items
        for attempt in range(1, self.backoff.attempts + 1):
            for item in pending:
                item.attempts = attempt
            t0 = time.monotonic()
            with self.crashes.holding([i.message for i in pending]):
                outcomes = self._call_stage([i.event for i in pending])
            handle_ms = (time.monotonic() - t0) * 1000
            metrics.INFERENCE.labels(self.stage.name).observe(handle_ms / 1000)
            retry = []
            for item, outcome in zip(pending, outcomes):
                item.handle_ms = handle_ms
                if isinstance(outcome, Emit):
                    outcome = self._write_blobs(item, outcome)
                if isinstance(outcome, TransientError):
                    retry.append((item, outcome))
                else:
                    item.outcome = outcome
            if not retry:
                return Handled.DONE
            pending = [item for item, _ in retry]
            last_error = retry[-1][1]
            if attempt == self.backoff.attempts:
                break
            metrics.RETRIES.labels(self.stage.name, "handle").inc(len(pending))
            log.warning("%s: transient failure on %d job(s), attempt %d/%d: %s", self.stage.name, len(pending),
                        attempt, self.backoff.attempts, last_error)
            if not self.backoff.sleep(attempt, self.stop):
                return Handled.STOPPED
        for item in pending:
            item.outcome = InvalidInputError("retries_exhausted", f"{self.backoff.attempts} attempts: {last_error}",
                                             status="failed")
        return Handled.DONE

    def _call_stage(self, batch: list[Event]) -> list[Any]:
        """The stage's outcomes, one per event; errors are returned in place, never raised."""
        if len(batch) > 1:
            try:
                outcomes = self.stage.handle_batch(batch, self.blobs)
                if len(outcomes) == len(batch):
                    return [self._outcome(event, o) for event, o in zip(batch, outcomes)]
                log.error("%s: handle_batch returned %d outcomes for %d events", self.stage.name, len(outcomes),
                          len(batch))
            except TransientError as exc:
                return [exc] * len(batch)
            except FatalError:
                raise
            except Exception:
                log.warning("%s: batch failed; handling its events one by one", self.stage.name, exc_info=True)
        return [self._call_one(event) for event in batch]

    def _call_one(self, event: Event) -> Any:
        try:
            return self.stage.handle(event, self.blobs)
        except Exception as exc:
            return self._outcome(event, exc)

    def _outcome(self, event: Event, outcome: Any) -> Any:
        if isinstance(outcome, Exception) and not isinstance(outcome, DeskgenError):
            log.error("%s: job %s crashed the stage:\n%s", self.stage.name, event.job_id,
                      "".join(traceback.format_exception(outcome)))
        return normalised(outcome)

    def _write_blobs(self, item: Item, outcome: Emit) -> Emit | InvalidInputError | TransientError:
        t0 = time.monotonic()
        try:
            for blob in outcome.blobs:
                check_object_key(blob.key, prefix=f"{GENERATED}/{item.event.job_id}")
                self.store.put(blob.key, blob.data, blob.content_type)
        except (InvalidInputError, TransientError) as exc:
            return exc
        item.blob_write_ms = (time.monotonic() - t0) * 1000
        return outcome

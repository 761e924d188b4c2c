"""The contract between the runtime and a stage.

A stage declares what it consumes and produces and the tables it reads, loads its model in ``load()``
and turns one event into one outcome in ``handle(event, blobs)``. It never touches Kafka, S3 clients,
metrics or retries: the runtime does, around it (it also feeds the stage's tables: ``tables.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from PIL import Image

from .topology import spec

if TYPE_CHECKING:
    from .events import Event
    from .tables import Table

__all__ = ["Blob", "Blobs", "Emit", "Reject", "Outcome", "Stage"]


@dataclass(frozen=True)
class Blob:
    """An object the runtime writes to S3 before it produces the stage's event."""

    key: str
    data: bytes
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class Emit:
    """The stage's normal output.

    ``section`` is merged into the outgoing event's data under the stage's ``section`` name
    (e.g. ``classification``); the runtime carries job id, image key, request, upload time and
    timeline forward by itself. ``blobs`` are written (idempotently) before the event is produced.
    """

    section: dict[str, Any]
    blobs: tuple[Blob, ...] = ()


@dataclass(frozen=True)
class Reject:
    """The job ends here as a terminal ``rejected`` result (e.g. ``not_desk``): a normal outcome,
    not an error, so no DLQ record. ``section`` is kept in the result for the backend to read."""

    reason: str
    detail: str = ""
    section: dict[str, Any] = field(default_factory=dict)


Outcome = Emit | Reject


class Blobs(Protocol):
    """Read access to the job's objects; the runtime fetches, retries and decodes."""

    def read(self, key: str) -> bytes:
        """Raw bytes of ``key``; InvalidInputError(object_missing) when it does not exist."""

    def image(self, key: str) -> Image.Image:
        """``key`` through the shared defensive decoder (RGB, EXIF-oriented)."""


@runtime_checkable
class Stage(Protocol):
    """What the runtime needs from a stage. A stage class subclasses it to get the defaults.

    Attributes:
        name: the service name, registered in ``topology.STAGES`` (a test stage may stand in for one).
        consumes: the input event kind; by default the topology's entry for ``name``.
        produces: the output event kind; by default the topology's entry for ``name``.
        section: the key its ``Emit.section`` is stored under in the output data; by default the topology's.
        batch_max: most events the runtime hands over at once (``DESKGEN_BATCH_MAX`` overrides it).
        tables: the compacted topics it reads whole (``tables.Table``); the runtime replays each before the
            first event and keeps it following.
    """

    name: str
    batch_max: int = 1
    tables: tuple[Table, ...] = ()

    @property
    def consumes(self) -> str:
        return spec(self.name).consumes

    @property
    def produces(self) -> str:
        return spec(self.name).produces

    @property
    def section(self) -> str:
        return spec(self.name).section

    def load(self) -> None:
        """Load models; called once before the first event. Readiness follows it."""

    def handle(self, event: Event, blobs: Blobs) -> Outcome:
        """Turn one event into one outcome. May raise InvalidInputError or TransientError."""
        raise NotImplementedError

    def handle_batch(self, events: list[Event], blobs: Blobs) -> list[Outcome | Exception]:
        """One outcome per event, in order; an event's exception is returned in its place, so the others
        still succeed. The default hands the events to ``handle`` one by one; a stage that scores several
        events in one forward pass overrides it. The whole batch commits in one Kafka transaction."""
        outcomes: list[Outcome | Exception] = []
        for event in events:
            try:
                outcomes.append(self.handle(event, blobs))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

"""Events that were in hand when the process died, counted across restarts.

An event whose handling kills the process itself (a native crash in a decoder or model, an
out-of-memory kill) is redelivered after the restart and would kill it again, for ever, holding up
its partition. While the stage works on a batch, the batch's offsets are noted in a small file; the
note goes when the stage returns or raises, so only deaths inside the stage's own work count (not
retry waits, not commits). A note found at start-up means the process died holding those events:
the runtime then handles them one per batch, and one that was in hand at ``limit`` deaths goes to
the DLQ instead of the stage. The file must outlive a container restart (the chart's /tmp is a
pod-lifetime emptyDir). An outside ``kill -9`` looks the same as a crash, so ``limit`` should stay
above the deaths a healthy event can see by bad luck.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from confluent_kafka import Message

from .errors import FatalError

__all__ = ["CrashLedger"]

log = logging.getLogger("deskgen.crashes")


def _key(message: Message) -> str:
    # The record's timestamp tells a recreated topic's record at the same offset from the one that died.
    return f"{message.topic()}:{message.partition()}:{message.offset()}@{message.timestamp()[1]}"


class CrashLedger:
    """Deaths per event offset, kept in ``path``; ``limit`` 0 turns it off."""

    def __init__(self, path: Path, limit: int):
        self.limit = limit
        self._path = path
        self._deaths: dict[str, int] = {}
        if limit > 0:
            self._recover()

    def deaths(self, message: Message) -> int:
        return self._deaths.get(_key(message), 0)

    @contextmanager
    def holding(self, batch: list[Message]) -> Iterator[None]:
        """Notes the batch as in hand while the stage works on it; the note goes when the block is left
        in any way the process survives."""
        if self.limit <= 0:
            yield
            return
        self._save([_key(m) for m in batch])
        try:
            yield
        finally:
            self._save([])

    def forget(self, batch: list[Message]) -> None:
        """The batch is committed: its events are done with for good."""
        if any(self._deaths.pop(_key(m), None) is not None for m in batch):
            self._save([])

    def _recover(self) -> None:
        try:
            state = json.loads(self._path.read_text())
            in_hand = [str(key) for key in state["in_hand"]]
            deaths = {str(key): int(count) for key, count in state["deaths"].items()}
        except FileNotFoundError:
            in_hand, deaths = [], {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring unreadable crash ledger %s (%s)", self._path, exc)
            in_hand, deaths = [], {}
        for key in in_hand:
            deaths[key] = deaths.get(key, 0) + 1
        if in_hand:
            log.warning("the previous process died while handling %d event(s) (%s); they are handled one at a "
                        "time now, and one in hand at %d deaths goes to the DLQ", len(in_hand),
                        ", ".join(f"{k}: {deaths[k]}" for k in in_hand[:5]), self.limit)
        self._deaths = deaths
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._save([])
        except OSError as exc:
            raise FatalError(f"crash ledger {self._path} is not writable ({exc}): point DESKGEN_STATE_DIR at a "
                             "writable folder that outlives a container restart, or set DESKGEN_CRASH_LIMIT=0") from None

    def _save(self, in_hand: list[str]) -> None:
        partial = self._path.with_suffix(".partial")
        partial.write_text(json.dumps({"in_hand": in_hand, "deaths": self._deaths}))
        os.replace(partial, self._path)

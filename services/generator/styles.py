"""Styles as data: LoRA adapters and presets on a compacted topic, followed by every generator as a table.

Topic ``<prefix>styles`` (``cleanup.policy=compact``).
Key ``adapter:<name>``: ``{"name", "uri", "sha256", "weight"}`` — a LoRA safetensors file or a folder holding
one (diffusers or Kohya keys), its file's sha256 and the weight it joins a mix with by default. Key
``preset:<name>``: ``{"name", "adapters": {adapter: weight}}``. A null value (tombstone) deletes the row.
The table's rows extend the settings' adapters and ``presets.json``; a row with a name of theirs replaces it.
A preset is available while every adapter it names is loaded, whatever order their records came in.

``decode`` runs on the table's feed thread and does the slow part: it resolves an adapter's URI (an s3:// or
hf:// one is downloaded into the model cache) and checks its sha256, so a record that does not resolve or
whose file differs goes to the DLQ and the adapter loaded before stays. ``apply`` only queues the rows; the
generator takes the queue between jobs (``take``), so no adapter changes under a running job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deskgen.common.errors import DeskgenError, InvalidInputError
from deskgen.common.events import Record
from deskgen.common.models import ModelSources, resolve
from deskgen.common.tables import Change, Table
from deskgen.services.generator.components import lora_file
from deskgen.services.generator.model import FAST_ADAPTER
from deskgen.services.generator.presets import BASE_PRESET

__all__ = ["StyleTable", "AdapterRow", "PresetRow", "adapter_record", "preset_record", "tombstone", "STYLES_KIND",
           "STYLE_REASONS", "file_sha256", "describe"]

log = logging.getLogger(__name__)

STYLES_KIND = "styles"
STYLE_REASONS = ("style_key_invalid", "style_record_invalid", "adapter_unresolved", "adapter_sha256_mismatch")
_NAME = r"[a-z0-9_]{1,32}"  # the event schema's preset names; adapters like them
# "base" is the base model alone; "fast" is the few-step LoRA of the settings.
_RESERVED = {"preset": {BASE_PRESET}, "adapter": {FAST_ADAPTER}}
_KEY = re.compile(rf"(adapter|preset):({_NAME})")


class AdapterRow(BaseModel):
    """An adapter record's value; ``path`` is filled in by ``decode`` (the local file it resolved to)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=rf"^{_NAME}$")
    uri: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    weight: float = Field(1.0, gt=0, le=2)
    path: str = Field("", exclude=True)


class PresetRow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=rf"^{_NAME}$")
    adapters: dict[str, float] = Field(min_length=1)

    def model_post_init(self, _context: Any) -> None:
        for adapter, weight in self.adapters.items():
            if not re.fullmatch(_NAME, adapter) or not 0 < weight <= 2:
                raise ValueError(f"adapter {adapter!r:.40}: a name like {_NAME} with a weight in (0, 2]")


def adapter_record(row: AdapterRow) -> Record:
    return Record(STYLES_KIND, f"adapter:{row.name}".encode(), row.model_dump_json().encode(), [])


def preset_record(row: PresetRow) -> Record:
    return Record(STYLES_KIND, f"preset:{row.name}".encode(), row.model_dump_json().encode(), [])


def tombstone(kind: str, name: str) -> Record:
    """The record deleting the adapter or preset ``name`` (``kind``: adapter or preset)."""
    return Record(STYLES_KIND, f"{kind}:{name}".encode(), None, [])


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class StyleTable(Table):
    """The styles topic as rows (``rows``: key → row, for listing) and a queue of changes for the generator."""

    name = STYLES_KIND
    kind = STYLES_KIND
    reasons = STYLE_REASONS

    def __init__(self, sources: ModelSources = ModelSources(), *, fetch: bool = True):
        self.sources, self.fetch = sources, fetch  # fetch=False: rows as published, adapters not resolved
        self.rows: dict[str, AdapterRow | PresetRow] = {}
        self._queue: list[Change] = []
        self._lock = threading.Lock()

    def load(self, state_dir: Path | None) -> None:
        """Nothing to prepare: adapters are resolved per record."""

    def decode(self, key: str, value: bytes, headers: list[tuple[str, bytes]] | None) -> AdapterRow | PresetRow:
        match = _KEY.fullmatch(key)
        if match is None:
            raise InvalidInputError("style_key_invalid", f"key {key!r:.80} is not adapter:<name> or preset:<name> "
                                    f"(name: {_NAME})", status="failed")
        kind, name = match.groups()
        try:
            row = (AdapterRow if kind == "adapter" else PresetRow).model_validate_json(value)
        except ValidationError as exc:
            problem = exc.errors()[0]
            raise InvalidInputError("style_record_invalid", f"{key}: {'.'.join(map(str, problem['loc']))} "
                                    f"{problem['msg']}"[:300], status="failed") from None
        if row.name != name:
            raise InvalidInputError("style_record_invalid", f"key {key!r} but name {row.name!r}", status="failed")
        if name in _RESERVED[kind]:
            raise InvalidInputError("style_record_invalid", f"{kind} name {name!r} is reserved", status="failed")
        return self._fetched(row) if isinstance(row, AdapterRow) and self.fetch else row

    def _fetched(self, row: AdapterRow) -> AdapterRow:
        try:
            path = lora_file(resolve(row.uri, self.sources))
        except DeskgenError as exc:
            raise InvalidInputError("adapter_unresolved", f"adapter {row.name}: {exc}"[:400], status="failed") from None
        actual = file_sha256(path)
        if actual != row.sha256:
            raise InvalidInputError("adapter_sha256_mismatch", f"adapter {row.name}: {path.name} has sha256 "
                                    f"{actual}, the record says {row.sha256}", status="failed")
        return row.model_copy(update={"path": str(path)})

    def apply(self, changes: list[Change]) -> None:
        with self._lock:
            for change in changes:
                if change.value is None:
                    self.rows.pop(change.key, None)
                else:
                    self.rows[change.key] = change.value
            self._queue.extend(changes)
        for change in changes:
            log.info("styles: %s %s", "deleted" if change.value is None else "queued", change.key)

    def take(self) -> list[Change]:
        """The changes applied since the last call, in order (the generator's side of the queue)."""
        with self._lock:
            taken, self._queue = self._queue, []
        return taken


def describe(rows: dict[str, AdapterRow | PresetRow]) -> list[str]:
    """One line per row, adapters first (for ``deskgen adapters list``)."""
    lines = []
    for key in sorted(rows, key=lambda k: (not k.startswith("adapter:"), k)):
        row = rows[key]
        if isinstance(row, AdapterRow):
            lines.append(f"adapter {row.name:<20} weight {row.weight:<4} sha256 {row.sha256[:12]}…  {row.uri}")
        else:
            lines.append(f"preset  {row.name:<20} {json.dumps(row.adapters)}")
    return lines

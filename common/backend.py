"""The backend's side of the pipeline: store a photo, publish its ``uploaded`` event, read terminal results.

    with Backend(BackendSettings.load()) as backend:
        job = backend.submit(photo_bytes, request={"concept": "BASIC"})
        result = backend.results([job], timeout_s=300)[job]   # the job's terminal result data

Results are read with ``read_committed`` from the ``generated`` topic, so only results whose
transaction committed are seen, each job's once.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, Iterable, Iterator

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

from . import events
from .errors import FatalError, InvalidInputError, TransientError
from .kafka import make_producer, make_reader
from .keys import upload_key
from .settings import KafkaSettings, RuntimeSettings, S3Settings, load
from .storage import ObjectStore

__all__ = ["Backend", "BackendSettings", "sniff_format", "upload_content_type"]

log = logging.getLogger("deskgen.backend")

_CONTENT_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp",
                  "heic": "image/heic", "heif": "image/heif", "avif": "image/avif"}
# ISO-BMFF major brands (the ``ftyp`` box) → extension; an iPhone writes ``heic``, libavif ``avif``.
_BRANDS = {b"avif": "avif", b"avis": "avif", b"heic": "heic", b"heix": "heic", b"heim": "heic", b"heis": "heic",
           b"hevc": "heic", b"hevx": "heic", b"mif1": "heif", b"msf1": "heif"}


@dataclass(frozen=True)
class BackendSettings:
    """What a backend needs: the broker, the topic prefix and the bucket."""

    kafka: KafkaSettings
    runtime: RuntimeSettings
    s3: S3Settings

    @classmethod
    def load(cls) -> "BackendSettings":
        """Every section from the ``DESKGEN_*`` environment (once)."""
        return cls(load(KafkaSettings), load(RuntimeSettings), load(S3Settings))

    def with_names(self, *, topic_prefix: str | None = None, bucket: str | None = None) -> "BackendSettings":
        """The same settings with another topic prefix and/or bucket (isolated pipelines in tests)."""
        runtime = self.runtime.model_copy(update={"topic_prefix": topic_prefix}) if topic_prefix else self.runtime
        s3 = self.s3.model_copy(update={"bucket": bucket}) if bucket else self.s3
        return replace(self, runtime=runtime, s3=s3)


def sniff_format(data: bytes) -> str | None:
    """``jpg`` | ``png`` | ``webp`` | ``heic`` | ``heif`` | ``avif`` from the first bytes, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:8] == b"ftyp":
        return _BRANDS.get(data[8:12])
    return None


def upload_content_type(data: bytes, filename: str | None = None) -> str:
    """The MIME type an upload is stored with: from the bytes, else from ``filename``'s extension."""
    ext = sniff_format(data) or (filename.rsplit(".", 1)[-1].lower() if filename and "." in filename else "")
    return _CONTENT_TYPES.get(ext, "application/octet-stream")


class Backend:
    """Uploads photos and publishes their events through one idempotent producer; reads results."""

    def __init__(self, settings: BackendSettings, *, source: str = "/deskgen/backend"):
        self.settings, self.source = settings, source
        self.store = ObjectStore(settings.s3)
        self._producer = None

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Deliver what is still queued (``flush``) and let the producer go."""
        if self._producer is not None:
            try:
                self.flush()
            finally:
                self._producer = None

    def ensure_bucket(self) -> None:
        self.store.ensure_bucket()

    def submit(self, data: bytes, *, job_id: str | None = None, request: dict[str, Any] | None = None,
               filename: str | None = None, content_type: str | None = None, wait: bool = True) -> str:
        """Store the photo under ``uploads/<job>/original.<ext>`` and publish its ``uploaded`` event.

        The format comes from ``filename``'s extension, else from the bytes; ``wait`` (default) returns
        once the broker has the event, else call ``flush`` later. Returns the job id.

        Raises:
            InvalidInputError: the photo is not jpg, png, webp, heic/heif or avif, or the request breaks the schema (the
                stages check size and content: a bad photo ends as a ``rejected`` result).
            TransientError: S3 or the broker did not take it (nothing is half-done: retry with the same job id).
        """
        ext = filename.rsplit(".", 1)[-1] if filename and "." in filename else sniff_format(data)
        job_id = job_id or uuid.uuid4().hex
        key = upload_key(job_id, ext or "unknown")
        record = events.encode("uploaded", {"job_id": job_id, "image_key": key, "uploaded_at": events.now(),
                                            "request": request or {}}, source=self.source)
        self.store.put(key, data, content_type or upload_content_type(data, filename))
        self.publish(record, wait=wait)
        return job_id

    def publish(self, record: events.Record, *, wait: bool = True) -> None:
        """Produce an encoded event on its kind's topic (``submit`` uses it; tests publish hand-made ones)."""
        if self._producer is None:
            self._failures: list[str] = []
            self._producer = make_producer(self.settings.kafka)
        self._producer.produce(self.settings.runtime.topic(record.kind), key=record.key, value=record.value,
                               headers=record.headers, on_delivery=self._delivered)
        self._producer.poll(0)
        if wait:
            self.flush()

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every event is delivered; TransientError names those that were not."""
        if self._producer is None:
            return
        left = self._producer.flush(timeout_s)
        failures, self._failures = self._failures, []
        if left or failures:
            raise TransientError(f"{left} event(s) still queued after {timeout_s:.0f} s; failures: {failures[:5]}")

    def _delivered(self, err, message) -> None:
        if err is not None:
            self._failures.append(f"{message.key()!r}: {err}")

    def watch(self, job_ids: Iterable[str] | None = None, *, timeout_s: float | None = None,
              from_start: bool = True) -> Iterator[dict[str, Any]]:
        """Terminal results as they commit: of ``job_ids`` (until each has one), or all (until the timeout)."""
        wanted = set(job_ids) if job_ids is not None else None
        topic = self.settings.runtime.topic("generated")
        reader = make_reader(self.settings.kafka)
        try:
            metadata = reader.list_topics(topic, timeout=10)
            if topic not in metadata.topics or metadata.topics[topic].error is not None:
                raise FatalError(f"topic {topic} does not exist: run `deskgen topics create`")
            start = OFFSET_BEGINNING if from_start else OFFSET_END
            reader.assign([TopicPartition(topic, p, start) for p in metadata.topics[topic].partitions])
            deadline = time.monotonic() + timeout_s if timeout_s is not None else None
            while (wanted is None or wanted) and (deadline is None or time.monotonic() < deadline):
                message = reader.poll(0.2)
                if message is None or message.error():
                    continue
                try:
                    result = events.decode(message.value(), message.headers(), "generated").data
                except InvalidInputError as exc:
                    log.warning("unreadable result at %s[%d]@%d: %s", topic, message.partition(), message.offset(), exc)
                    continue
                if wanted is None or result["job_id"] in wanted:
                    if wanted is not None:
                        wanted.discard(result["job_id"])
                    yield result
        finally:
            reader.close()

    def results(self, job_ids: Iterable[str], timeout_s: float) -> dict[str, dict[str, Any]]:
        """The terminal result data of each job that has one within ``timeout_s``, by job id."""
        return {result["job_id"]: result for result in self.watch(job_ids, timeout_s=timeout_s)}

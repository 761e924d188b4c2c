"""The product catalogue on Kafka: a compacted topic every replica reads whole, then follows.

Topic ``<prefix>products`` (``cleanup.policy=compact``): key = product id, value = a CloudEvent
``com.deskgen.product.upserted`` whose data is one product (``schemas/product.json``); a record
with a null value (a tombstone) deletes the product. Compaction keeps the latest record per id, so
replaying the topic from the beginning rebuilds the catalogue.

``CatalogueFeed`` reads it with its own consumer, assigned to every partition from the beginning:
no consumer group, no commits, so each replica holds the whole catalogue and the stage's
transactional loop (its own consumer and group) is untouched. ``caught_up`` is set once the feed
has applied everything up to the end offsets it saw at start; then it keeps following live. A
record that breaks the schema goes to the DLQ with a reason and changes nothing. Each replica sends
it once per process start (``source`` = topic/partition/offset identifies it for de-duplication).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any, Callable, Iterable

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, Producer, TopicPartition

from . import events, metrics
from .errors import FatalError, InvalidInputError
from .kafka import make_producer, make_reader
from .settings import KafkaSettings, RuntimeSettings

__all__ = ["Change", "Category", "CatalogueFeed", "categories", "product_record", "tombstone_record", "publish"]

log = logging.getLogger("deskgen.catalogue")

_BATCH = 512
_PRODUCT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SOURCE = "/deskgen/catalogue"


@dataclass(frozen=True)
class Category:
    """A product category: the caption objects and the ImageNet classes that stand for it."""

    name: str
    words: tuple[str, ...]
    imagenet: tuple[str, ...]


@cache
def categories() -> dict[str, Category]:
    """The controlled vocabulary (``categories.json``), checked against the product schema's enum."""
    data = json.loads((files("deskgen.common") / "categories.json").read_text())["categories"]
    schema = json.loads((files("deskgen.common") / "schemas" / "product.json").read_text())
    if sorted(data) != sorted(schema["$defs"]["category"]["enum"]):
        raise ValueError("categories.json and schemas/product.json name different categories")
    return {name: Category(name, tuple(c["words"]), tuple(c["imagenet"])) for name, c in data.items()}


@dataclass(frozen=True)
class Change:
    """One catalogue change: ``product`` is the validated record, ``None`` for a delete."""

    product_id: str
    product: dict[str, Any] | None


def product_record(product: dict[str, Any], *, source: str = _SOURCE) -> events.Record:
    """The Kafka record of an upsert; InvalidInputError(event_invalid) if it breaks the schema."""
    return events.encode("product", product, source=source, key=str(product.get("id", "")))


def tombstone_record(product_id: str) -> events.Record:
    """The Kafka record that deletes ``product_id`` (null value); InvalidInputError for a malformed id."""
    if not _PRODUCT_ID.fullmatch(product_id):
        raise InvalidInputError("product_id_invalid", f"{product_id!r:.80} is not a product id "
                                "(letters, digits, '_', '.', '-'; at most 64)")
    return events.Record("product", product_id.encode(), None, [])


def publish(kafka: KafkaSettings, runtime: RuntimeSettings, records: Iterable[events.Record],
            timeout: float = 60.0) -> int:
    """Produce ``records`` to the catalogue topic (idempotent, acks=all); returns how many were sent.

    Raises:
        FatalError: a record was not delivered within ``timeout``.
    """
    producer = make_producer(kafka, **{"linger.ms": 20})
    topic = runtime.topic(events.CATALOGUE_KIND)
    failures: list[str] = []
    sent = 0
    for record in records:
        while True:
            try:
                producer.produce(topic, key=record.key, value=record.value, headers=record.headers,
                                 on_delivery=lambda err, msg: err and failures.append(str(err)))
                break
            except BufferError:
                producer.poll(0.1)
        sent += 1
        producer.poll(0)
    if producer.flush(timeout) or failures:
        raise FatalError(f"catalogue records not delivered to {topic}: {failures[:3] or 'flush timed out'}")
    return sent


class CatalogueFeed:
    """Replays the catalogue topic into ``apply`` on a background thread, then follows it.

    Args:
        apply: called on the feed's thread with each batch of changes, in partition order.
        stage: the service name (metrics label, DLQ ``stage``).
    """

    def __init__(self, kafka: KafkaSettings, runtime: RuntimeSettings, apply: Callable[[list[Change]], None],
                 *, stage: str):
        self._kafka, self._runtime, self._apply, self._stage = kafka, runtime, apply, stage
        self.topic = runtime.topic(events.CATALOGUE_KIND)
        self.caught_up = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._dlq: Producer | None = None
        self.applied = 0

    def start(self) -> None:
        """Assign every partition from the beginning and start following (returns at once).

        Raises:
            FatalError: the topic does not exist or the broker cannot be reached.
        """
        # Every partition is assigned, never subscribed: no group, nothing committed, the whole topic read.
        consumer = make_reader(self._kafka, **{"enable.partition.eof": True, "fetch.wait.max.ms": 100})
        try:
            metadata = consumer.list_topics(self.topic, timeout=30)
        except KafkaException as exc:
            consumer.close()
            raise FatalError(f"cannot read the catalogue topic {self.topic}: {exc}; check DESKGEN_KAFKA_BOOTSTRAP_SERVERS") from None
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            consumer.close()
            raise FatalError(f"catalogue topic {self.topic} does not exist: run `deskgen topics create`")
        partitions = sorted(topic.partitions)
        # The end offsets at start; a partition is caught up at or past its own, or at its end (EOF).
        ends = {p: consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=30)[1] for p in partitions}
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        self._dlq = make_producer(self._kafka)
        log.info("%s: replaying catalogue %s up to %s", self._stage, self.topic, ends)
        self._thread = threading.Thread(target=self._follow, args=(consumer, ends), name="catalogue", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until caught up (True), the feed failed (FatalError) or ``timeout`` passed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.caught_up.wait(0.2):
            if self.error is not None:
                raise FatalError(f"the catalogue feed stopped: {self.error}")
            if deadline is not None and time.monotonic() > deadline:
                return False
        return True

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._dlq is not None:
            self._dlq.flush(10)

    # -- the feed's thread ----------------------------------------------------------------------

    def _follow(self, consumer, ends: dict[int, int]) -> None:
        pending = {p for p, end in ends.items() if end > 0}
        started = time.monotonic()
        last_lag = 0.0
        try:
            if not pending:
                self._caught_up(started)
            while not self._stop.is_set():
                messages = consumer.consume(_BATCH, 0.5)
                changes = []
                for message in messages:
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            pending.discard(message.partition())
                        else:
                            log.warning("%s: catalogue consumer: %s", self._stage, error.str())
                        continue
                    if message.offset() + 1 >= ends.get(message.partition(), 0):
                        pending.discard(message.partition())
                    change = self._change(message)
                    if change is not None:
                        changes.append(change)
                if changes:
                    self._apply(changes)
                    self.applied += len(changes)
                if pending == set() and not self.caught_up.is_set():
                    self._caught_up(started)
                if time.monotonic() - last_lag > 1.0 or messages:
                    last_lag = time.monotonic()
                    metrics.CATALOGUE_LAG.labels(self._stage).set(self._lag(consumer))
                self._dlq.poll(0)
        except BaseException as exc:  # handed to wait() / the readiness probe; the service stops
            log.exception("%s: the catalogue feed failed", self._stage)
            self.error = exc
        finally:
            consumer.close()

    def _caught_up(self, started: float) -> None:
        log.info("%s: catalogue caught up (%d changes applied in %.1f s); following live", self._stage,
                 self.applied, time.monotonic() - started)
        self.caught_up.set()

    def _lag(self, consumer) -> int:
        lag = 0
        for tp in consumer.assignment():
            high = consumer.get_watermark_offsets(tp, cached=True)
            position = consumer.position([tp])[0].offset
            if high and high[1] >= 0 and position >= 0:
                lag += max(high[1] - position, 0)
        return lag

    def _change(self, message: Message) -> Change | None:
        key = (message.key() or b"").decode("utf-8", "replace")
        try:
            if message.value() is None:
                if not key:
                    raise InvalidInputError("product_key_missing", "a tombstone without a key", status="failed")
                return Change(key, None)
            product = events.decode(message.value(), message.headers(), "product").data
            if product["id"] != key:
                raise InvalidInputError("product_key_mismatch", f"key {key!r:.70} but id {product['id']!r:.70}",
                                        status="failed")
            return Change(key, product)
        except InvalidInputError as exc:
            log.warning("%s: bad catalogue record at %s[%d]@%d: %s", self._stage, message.topic(),
                        message.partition(), message.offset(), exc)
            self._dead_letter(message, exc)
            return None

    def _dead_letter(self, message: Message, error: InvalidInputError) -> None:
        value = message.value() or b""
        data = {
            "job_id": None, "stage": self._stage, "reason": error.reason, "detail": error.detail[:2000],
            "status": error.status, "failed_at": events.now(),
            "source": {"topic": message.topic(), "partition": message.partition(), "offset": message.offset()},
            "key_b64": base64.b64encode(message.key()).decode() if message.key() else None,
            "headers": {n: (v or b"").decode("utf-8", "replace")[:512] for n, v in (message.headers() or [])[:32]},
            "payload_b64": base64.b64encode(value[:64 * 1024]).decode(),
            "payload_truncated": len(value) > 64 * 1024,
        }
        record = events.encode("dlq", data, source=_SOURCE)
        self._dlq.produce(self._runtime.topic("dlq"), key=record.key, value=record.value, headers=record.headers)
        metrics.DLQ.labels(self._stage, error.reason).inc()

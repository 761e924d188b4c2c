"""Tables: compacted topics a stage reads whole, then follows; the runtime owns them, not the stage.

A stage lists its tables in ``Stage.tables`` (the captioner: the product catalogue). A table's topic
(prefix + ``Table.kind``) is compacted: key = a row's id, value = its latest version, a null value (a
tombstone) deletes the row, so replaying the topic from the beginning rebuilds the table.

``TableFeed`` reads one topic with its own consumer, assigned to every partition from the beginning: no
group, no commits, so each replica holds the whole table and the stage's transactional loop is untouched.
It is caught up once it has applied everything up to the end offsets it saw at start; then it follows
live. A record the table cannot decode changes nothing and goes to the DLQ (``records.dlq_record``, once
per process start; ``source`` = topic/partition/offset identifies it). Its delivery is checked: a record
that cannot be dead-lettered fails the feed. ``Tables`` runs a stage's feeds for the runtime, in the
stage's order (each replays once the one before has caught up, so a table may build on the ones before it):
readiness waits for them to catch up and turns false when one fails (``deskgen_table_up`` 0), and the runtime then
exits (code 2), so a replica never serves from a table that stopped following.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Protocol

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from . import metrics
from .errors import FatalError, InvalidInputError
from .kafka import make_producer, make_reader
from .records import dlq_record
from .settings import KafkaSettings, RuntimeSettings

__all__ = ["Change", "Table", "TableFeed", "Tables", "FEED_REASONS", "publish", "replay"]

log = logging.getLogger("deskgen.tables")

_BATCH = 512
# The DLQ reasons the feed gives by itself, whatever the table (a table's ``decode`` adds its own).
FEED_REASONS = ("table_key_missing",)


@dataclass(frozen=True)
class Change:
    """One change of a table: ``value`` is the decoded row, ``None`` deletes ``key``."""

    key: str
    value: Any | None


class Table(Protocol):
    """What the runtime needs from a table. A table class subclasses it to get the defaults.

    Attributes:
        name: the table's name (metric label ``table``, logs).
        kind: the kind its topic is named after (topic = prefix + kind).
        reasons: every DLQ reason its ``decode`` gives (their series exist from start-up).
        catchup_timeout_s: start-up fails (exit 2) if the topic has not been replayed within this time.
    """

    name: str
    kind: str
    reasons: tuple[str, ...] = ()
    catchup_timeout_s: float = 600.0

    def load(self, state_dir: Path | None) -> None:
        """Get ready to apply changes (models, caches); ``state_dir`` outlives a restart, None = keep nothing."""

    def decode(self, key: str, value: bytes, headers: list[tuple[str, bytes]] | None) -> Any:
        """One upsert's row; InvalidInputError(reason) when the record is not a valid row."""
        raise NotImplementedError

    def apply(self, changes: list[Change]) -> None:
        """Apply changes in order (the last change of a key wins); called on the feed's thread."""
        raise NotImplementedError


class TableFeed:
    """Replays one table's topic into ``table.apply`` on a background thread, then follows it.

    Args:
        stage: the service name (metric label ``stage``, the DLQ record's ``stage``).
    """

    def __init__(self, table: Table, kafka: KafkaSettings, runtime: RuntimeSettings, *, stage: str):
        self.table, self._kafka, self._stage = table, kafka, stage
        self.topic = runtime.topic(table.kind)
        self._dlq_topic = runtime.topic("dlq")
        self.caught_up = threading.Event()
        self.error: BaseException | None = None
        self.applied = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._undelivered: list[str] = []
        self._labels = {"stage": stage, "table": table.name}
        metrics.TABLE_UP.labels(**self._labels).set(0)
        metrics.TABLE_LAG.labels(**self._labels).set(0)

    def start(self) -> None:
        """Assign every partition from the beginning and start following (returns at once).

        Raises:
            FatalError: the topic does not exist or the broker cannot be reached.
        """
        consumer = make_reader(self._kafka, **{"enable.partition.eof": True, "fetch.wait.max.ms": 100})
        try:
            topic = consumer.list_topics(self.topic, timeout=30).topics.get(self.topic)
            if topic is None or topic.error is not None or not topic.partitions:
                raise FatalError(f"{self.table.name} topic {self.topic} does not exist: run `deskgen topics create`")
            partitions = sorted(topic.partitions)
            # The end offsets at start; a partition is caught up at or past its own, or at its end (EOF).
            ends = {p: consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=30)[1] for p in partitions}
        except KafkaException as exc:  # e.g. the broker is restarting: one line, exit 2, and a restart retries
            consumer.close()
            raise FatalError(f"cannot read the {self.table.name} topic {self.topic}: {exc}; "
                             "check DESKGEN_KAFKA_BOOTSTRAP_SERVERS") from None
        except FatalError:
            consumer.close()
            raise
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        log.info("%s: replaying table %s (%s) up to %s", self._stage, self.table.name, self.topic, ends)
        self._thread = threading.Thread(target=self._follow, args=(consumer, ends), name=f"table-{self.table.name}",
                                        daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until caught up (True), the feed failed (FatalError) or ``timeout`` passed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.caught_up.wait(0.2):
            self.check()
            if deadline is not None and time.monotonic() > deadline:
                return False
        return True

    def check(self) -> None:
        """Raise FatalError if the feed has failed."""
        if self.error is not None:
            raise FatalError(f"the {self.table.name} table's feed stopped: {self.error}")

    @property
    def up(self) -> bool:
        return self.caught_up.is_set() and self.error is None

    def close(self) -> None:
        """Stop following (the DLQ records in flight are flushed first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)  # the feed's thread flushes its DLQ records (10 s) before it ends
        metrics.TABLE_UP.labels(**self._labels).set(0)

    # -- the feed's thread ----------------------------------------------------------------------

    def _follow(self, consumer, ends: dict[int, int]) -> None:
        pending = {p for p, end in ends.items() if end > 0}
        started = time.monotonic()
        last_lag = 0.0
        dlq = make_producer(self._kafka)
        try:
            while not self._stop.is_set():
                if not pending and not self.caught_up.is_set():
                    self._caught_up(started)
                messages = consumer.consume(_BATCH, 0.5)
                changes = []
                for message in messages:
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            pending.discard(message.partition())
                        else:
                            log.warning("%s: table %s consumer: %s", self._stage, self.table.name, error.str())
                        continue
                    if message.offset() + 1 >= ends.get(message.partition(), 0):
                        pending.discard(message.partition())
                    change = self._change(message, dlq)
                    if change is not None:
                        changes.append(change)
                if changes:
                    self.table.apply(changes)
                    self.applied += len(changes)
                if time.monotonic() - last_lag > 1.0 or messages:
                    last_lag = time.monotonic()
                    metrics.TABLE_LAG.labels(**self._labels).set(_lag(consumer))
                dlq.poll(0)
                self._check_delivered()
            if dlq.flush(10):
                self._undelivered.append("flush timed out")
            self._check_delivered()
        except BaseException as exc:  # handed to wait() / check() / readiness; the runtime stops
            log.exception("%s: the %s table's feed failed", self._stage, self.table.name)
            self.error = exc
            metrics.TABLE_UP.labels(**self._labels).set(0)
        finally:
            consumer.close()

    def _caught_up(self, started: float) -> None:
        log.info("%s: table %s caught up (%d changes applied in %.1f s); following live", self._stage,
                 self.table.name, self.applied, time.monotonic() - started)
        self.caught_up.set()
        metrics.TABLE_UP.labels(**self._labels).set(1)

    def _change(self, message: Message, dlq) -> Change | None:
        key = (message.key() or b"").decode("utf-8", "replace")
        try:
            if not key:
                raise InvalidInputError("table_key_missing", "a record with an empty key", status="failed")
            value = message.value()
            return Change(key, None if value is None else self.table.decode(key, value, message.headers()))
        except InvalidInputError as exc:
            log.warning("%s: bad %s record at %s[%d]@%d: %s", self._stage, self.table.name, message.topic(),
                        message.partition(), message.offset(), exc)
            record, reason = dlq_record(message, exc, self._stage), exc.reason
            dlq.produce(self._dlq_topic, key=record.key, value=record.value, headers=record.headers,
                        on_delivery=lambda err, _: self._delivered(err, reason))
            return None

    def _delivered(self, err: KafkaError | None, reason: str) -> None:
        if err is None:
            metrics.DLQ.labels(self._stage, reason).inc()
        else:
            self._undelivered.append(f"{reason}: {err.str()}")

    def _check_delivered(self) -> None:
        if self._undelivered:
            raise FatalError(f"bad {self.table.name} records could not be sent to {self._dlq_topic}: "
                             f"{self._undelivered[:3]}")


def _lag(consumer) -> int:
    lag = 0
    for tp in consumer.assignment():
        high = consumer.get_watermark_offsets(tp, cached=True)
        position = consumer.position([tp])[0].offset
        if high and high[1] >= 0 and position >= 0:
            lag += max(high[1] - position, 0)
    return lag


class Tables:
    """A stage's tables as the runtime runs them: start, wait for catch-up, watch, close."""

    def __init__(self, tables: tuple[Table, ...], kafka: KafkaSettings, runtime: RuntimeSettings, *, stage: str):
        self.feeds = [TableFeed(table, kafka, runtime, stage=stage) for table in tables]
        self._state_dir = runtime.state_dir
        for table in tables:
            for reason in (*FEED_REASONS, *table.reasons):
                metrics.DLQ.labels(stage, reason)

    def start(self) -> None:
        """Load each table and start the first feed (``wait`` starts the others in turn).

        Raises:
            FatalError: the first topic is missing or the broker is down.
        """
        for feed in self.feeds:
            feed.table.load(self._state_dir)
        if self.feeds:
            self.feeds[0].start()

    def wait(self, stop: threading.Event) -> None:
        """Return once every table has caught up, or ``stop`` is set. The feeds replay in the stage's order, each
        once the one before has caught up, so a table can build on those listed before it (the catalogue on its
        product vectors).

        Raises:
            FatalError: a topic is missing, a feed failed, or did not catch up within its table's
                ``catchup_timeout_s``.
        """
        for number, feed in enumerate(self.feeds):
            if stop.is_set():
                return
            if number:
                feed.start()
            deadline = time.monotonic() + feed.table.catchup_timeout_s
            while not stop.is_set() and not feed.wait(0.5):
                if time.monotonic() > deadline:
                    raise FatalError(f"the {feed.table.name} table did not catch up within "
                                     f"{feed.table.catchup_timeout_s:.0f} s")

    def check(self) -> None:
        """Raise FatalError if a feed has failed (after it catches up, a table must keep following)."""
        for feed in self.feeds:
            feed.check()

    @property
    def ready(self) -> bool:
        return all(feed.up for feed in self.feeds)

    def close(self) -> None:
        for feed in self.feeds:
            feed.close()


def replay(table: Table, kafka: KafkaSettings, runtime: RuntimeSettings, *, stage: str = "cli") -> None:
    """Apply ``table``'s topic from the beginning to its end once, then stop (a CLI's view of the table)."""
    feed = TableFeed(table, kafka, runtime, stage=stage)
    feed.start()
    try:
        feed.wait()
    finally:
        feed.close()


def publish(kafka: KafkaSettings, topic: str, records: Iterable[Any], timeout: float = 60.0) -> int:
    """Produce table rows (records with ``key``, ``value``, ``headers``; a None value deletes) to ``topic``,
    idempotent, acks=all; returns how many were sent.

    Raises:
        FatalError: a record was not delivered within ``timeout``.
    """
    producer = make_producer(kafka, **{"linger.ms": 20})
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
        raise FatalError(f"records not delivered to {topic}: {failures[:3] or 'flush timed out'}")
    return sent

"""The stage runtime: consume → validate → handle → write blobs → produce → commit.

Delivery guarantee: every consumed event ends in exactly one of (a) the stage's next event,
(b) a terminal result on ``generated``, or (c) a DLQ record plus a terminal result — and the outputs
of a batch are committed in the same Kafka transaction as the batch's input offsets. Readers use
``read_committed``, so a crash at any point (``kill -9`` included) either exposes a batch's outputs
once or not at all; the batch is then processed again from the last committed offset.

Assumptions:
- Objects are written under keys derived from the job id before the transaction commits, so a
  replay overwrites them instead of adding copies (a replay may leave an object whose event was
  aborted; it is overwritten by the replay that commits).
- A stage is deterministic enough that reprocessing a job is harmless.
- Each instance has a stable ``DESKGEN_INSTANCE_ID``: its transactional id fences a crashed
  predecessor with the same id at start-up, so readers are not held up by its open transaction.
- Work longer than ``max.poll.interval.ms`` is safe: while a batch is being handled the consumer's
  partitions are paused and the loop keeps polling, so the group sees a live member.
- The stage's tables (``tables.py``) have replayed their topics before the first event is consumed; a
  table whose feed fails stops the process (exit 2), so no event is handled against a table that stopped
  following.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from . import events, metrics
from .checkpoint import Checkpoint
from .crashes import CrashLedger
from .errors import FatalError, InvalidInputError
from .handling import Handled, Handler
from .health import HealthState
from .kafka import group_id, make_consumer, make_producer_config
from .observe import brokers_up, forget_lag, observe_gpu_memory, observe_job, observe_lag, start_series
from .records import Item, build_records, commit_offsets, first_offsets
from .retry import Backoff
from .settings import ImageSettings, KafkaSettings, RuntimeSettings
from .stage import Stage
from .starvation import FetchWatch
from .storage import ObjectStore
from .tables import Tables

__all__ = ["Runtime"]

log = logging.getLogger("deskgen.runtime")

_KEEPALIVE_POLL_S = 0.2


class Runtime:
    """Runs one stage against Kafka and S3 until stopped."""

    def __init__(self, stage: Stage, *, runtime: RuntimeSettings, kafka: KafkaSettings, store: ObjectStore,
                 images: ImageSettings):
        self.stage, self.settings, self.kafka, self.store, self._images = stage, runtime, kafka, store, images
        self.tables = Tables(stage.tables, kafka, runtime, stage=stage.name)
        self.health = HealthState(stall_s=max(300.0, kafka.max_poll_interval_ms / 1000),
                                  tables_ready=lambda: self.tables.ready)
        self.stop_requested = threading.Event()
        self._backoff = Backoff(runtime.retry_max_attempts, runtime.retry_base_ms / 1000, runtime.retry_max_ms / 1000)
        self._batch_max = runtime.batch_max or stage.batch_max
        self._input_topic = runtime.topic(stage.consumes)
        self._stash: list[Message] = []
        self._revoked = False
        self._consumer = None
        self._checkpoint: Checkpoint | None = None
        self._crashes: CrashLedger | None = None
        self._handler: Handler | None = None
        self._fetch_watch = FetchWatch(runtime.partition_stall_seconds)
        self._fatal: FatalError | None = None
        self._labels = {"stage": stage.name}
        start_series(stage)

    # -- lifecycle ---------------------------------------------------------------------------

    def run(self) -> int:
        """Load the stage, replay its tables, join the group and process batches until ``stop()``; returns the
        exit code."""
        try:
            started = time.monotonic()
            self.stage.load()
            metrics.MODEL_LOAD.labels(**self._labels).set(time.monotonic() - started)
            observe_gpu_memory(self.stage.name)
            self.health.model_loaded = True
            log.info("%s: model loaded in %.1f s", self.stage.name, time.monotonic() - started)
            self.tables.start()
            self.tables.wait(self.stop_requested)
            self._connect()
            while self._consumer is not None and not self.stop_requested.is_set():
                self._step()
            if self._fatal is not None:
                raise self._fatal
            return 0
        except FatalError as exc:
            log.error("%s: fatal: %s", self.stage.name, exc)
            return 2
        finally:
            self._close()

    def stop(self) -> None:
        """Ask the loop to finish the batch in hand and exit (SIGTERM)."""
        self.stop_requested.set()

    def _connect(self) -> None:
        transactional_id = f"{group_id(self.kafka, self.stage.name)}-{self.settings.instance_id}"
        self._crashes = CrashLedger(self.settings.state_dir / f"{transactional_id}.crashes.json",
                                    self.settings.crash_limit)
        self._handler = Handler(self.stage, self.store, self._images, self._backoff, self._crashes,
                                self.stop_requested)
        self._checkpoint = Checkpoint(make_producer_config(self.kafka, transactional_id, self._on_client_error),
                                      self.stop_requested, self._backoff)
        self._checkpoint.init()
        if self.stop_requested.is_set():
            return
        self.health.broker_reachable = True
        self._consumer = make_consumer(self.kafka, self.stage.name, stats_cb=self._on_stats,
                                       error_cb=self._on_client_error)
        self._consumer.subscribe([self._input_topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_revoke)
        log.info("%s: consuming %s as %s (transactional id %s)", self.stage.name, self._input_topic,
                 group_id(self.kafka, self.stage.name), transactional_id)

    def _close(self) -> None:
        self.health.running = False
        metrics.READY.labels(**self._labels).set(0)
        if self._consumer is not None:
            self._consumer.close()
        if self._checkpoint is not None:
            self._checkpoint.close()
        self.tables.close()

    # -- callbacks ---------------------------------------------------------------------------

    def _on_assign(self, consumer, partitions) -> None:
        self._fetch_watch.assigned(partitions)
        for p in partitions:  # the lag series exists from assignment, before librdkafka's first statistics
            metrics.CONSUMER_LAG.labels(self.stage.name, p.topic, str(p.partition))
        self.health.group_joined = True
        metrics.READY.labels(**self._labels).set(1 if self.health.ready else 0)
        log.info("%s: assigned %s", self.stage.name, [p.partition for p in partitions])

    def _on_revoke(self, consumer, partitions) -> None:
        self._revoked = True
        self._fetch_watch.revoked(partitions)
        revoked = {(p.topic, p.partition) for p in partitions}
        self._stash = [m for m in self._stash if (m.topic(), m.partition()) not in revoked]
        # librdkafka keeps a partition's pause flag across rebalances: one revoked while a batch had it
        # paused would come back paused, and never be fetched again.
        try:
            consumer.resume(partitions)
        except KafkaException as exc:
            log.warning("%s: could not resume revoked partitions: %s", self.stage.name, exc)
        forget_lag(self.stage.name, revoked)
        log.info("%s: revoked %s", self.stage.name, [p.partition for p in partitions])

    def _on_client_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._AUTHENTICATION:  # retrying cannot help: stop instead of a retry storm
            self._fatal = FatalError(f"Kafka authentication failed ({err.str()}): check DESKGEN_KAFKA_SASL_* "
                                     "and DESKGEN_KAFKA_SECURITY_PROTOCOL")
            self.stop_requested.set()
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            self.health.broker_reachable = False
            metrics.READY.labels(**self._labels).set(0)
            log.warning("%s: Kafka unreachable; reconnecting", self.stage.name)
        elif err.fatal():
            log.error("%s: Kafka fatal error: %s", self.stage.name, err)
        else:
            log.debug("%s: Kafka: %s", self.stage.name, err)

    def _on_stats(self, stats_json: str) -> None:
        """Lag per partition; and a broker back after an outage makes the stage ready again even when no record
        arrives (an idle pipeline), since librdkafka reports only the outage as an error."""
        stats = json.loads(stats_json)
        observe_lag(self.stage.name, stats)
        if not self.health.broker_reachable and brokers_up(stats):
            self.health.broker_reachable = True
            metrics.READY.labels(**self._labels).set(1 if self.health.ready else 0)
            log.info("%s: Kafka reachable again", self.stage.name)

    # -- the loop ----------------------------------------------------------------------------

    def _step(self) -> None:
        self.health.beat()
        self.tables.check()
        self._fetch_watch.check(self._consumer)
        first = self._stash.pop(0) if self._stash else self._fetched(self._consumer.poll(0.5))
        if first is None:
            return
        if first.error():
            self._log_consumer_error(first.error())
            return
        self.health.broker_reachable = True
        metrics.READY.labels(**self._labels).set(1 if self.health.ready else 0)
        batch = [first]
        while self._stash and len(batch) < self._batch_max:
            batch.append(self._stash.pop(0))
        if len(batch) < self._batch_max:
            more = self._consumer.consume(self._batch_max - len(batch), self.settings.batch_wait_ms / 1000)
            for message in more:
                if message.error():
                    self._log_consumer_error(message.error())
                else:
                    batch.append(self._fetched(message))
        if len(batch) > 1 and any(self._crashes.deaths(m) for m in batch):
            self._stash[:0] = batch[1:]  # events in hand at a crash go one per batch, to find the culprit
            batch = batch[:1]
        self._process(batch)

    def _fetched(self, message: Message | None) -> Message | None:
        if message is not None and not message.error():
            self._fetch_watch.fetched(message)
        return message

    def _log_consumer_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            log.error("%s: topic %s does not exist: run `deskgen topics create`", self.stage.name, self._input_topic)
            self.stop_requested.wait(2.0)
        else:
            log.warning("%s: consumer error: %s", self.stage.name, err.str())

    def _process(self, batch: list[Message]) -> None:
        """Decode, handle (with retries), build the records and commit them with the offsets, or rewind."""
        started = time.monotonic()
        received = events.now()
        items = [Item(m, received) for m in batch]
        metrics.INFLIGHT.labels(**self._labels).set(len(items))
        metrics.BATCH_SIZE.labels(**self._labels).observe(len(items))
        self._revoked = False
        try:
            for item in items:
                self._decode(item)
                self._fail_if_it_kills(item)
            handled = self._with_keepalive(lambda: self._handler.handle_all([i for i in items if i.outcome is None]))
            observe_gpu_memory(self.stage.name)
            # Not committed: the offsets stay where they were and the batch is redelivered.
            if handled is None:
                log.warning("%s: shutdown grace exceeded; abandoning a batch of %d", self.stage.name, len(items))
                return
            if handled is Handled.STOPPED:
                log.info("%s: stopped during a retry backoff; leaving a batch of %d", self.stage.name, len(items))
                return
            if self._revoked:  # partitions moved while handling: the new owner redoes the batch
                log.info("%s: partitions revoked during the batch; not committing it", self.stage.name)
                return
            records = [r for item in items for r in build_records(item, self.stage, self.settings.topic)]
            committed = self._checkpoint.commit(records, commit_offsets(items), self._consumer)
        finally:
            metrics.INFLIGHT.labels(**self._labels).set(0)
        metrics.TRANSACTIONS.labels(self.stage.name, "committed" if committed else "aborted").inc()
        if not committed:
            self._rewind(items)
            return
        self._crashes.forget(batch)
        elapsed = time.monotonic() - started
        for item in items:
            observe_job(self.stage.name, item, elapsed)

    def _decode(self, item: Item) -> None:
        message = item.message
        try:
            item.event = events.decode(message.value(), message.headers(), self.stage.consumes,
                                       max_bytes=self.settings.max_event_bytes)
        except InvalidInputError as exc:
            item.outcome = exc
            log.warning("%s: bad event at %s[%d]@%d: %s", self.stage.name, message.topic(), message.partition(),
                        message.offset(), exc)

    def _fail_if_it_kills(self, item: Item) -> None:
        deaths = self._crashes.deaths(item.message)
        if item.outcome is None and deaths >= self._crashes.limit > 0:
            item.outcome = InvalidInputError("stage_crashed", f"the {self.stage.name} process died {deaths} times "
                                             "while handling this event", status="failed")
            log.error("%s: event at %s[%d]@%d was in hand at %d process deaths; sending it to the DLQ",
                      self.stage.name, item.message.topic(), item.message.partition(), item.message.offset(), deaths)

    def _with_keepalive(self, work: Callable[[], Handled]) -> Handled | None:
        """Run ``work`` on a worker thread while this thread keeps the consumer polled (paused).

        Returns work's result, or None if shutdown grace ran out first.
        """
        result: dict[str, Any] = {}

        def target() -> None:
            try:
                result["value"] = work()
            except BaseException as exc:  # handed back to the loop's thread
                result["error"] = exc

        worker = threading.Thread(target=target, name=f"{self.stage.name}-handle", daemon=True)
        worker.start()
        worker.join(timeout=min(1.0, self.kafka.max_poll_interval_ms / 4000))
        paused: list[TopicPartition] = []
        stop_deadline = None
        while worker.is_alive():
            if not paused:
                paused = self._consumer.assignment()
                self._consumer.pause(paused)
            self.health.beat()
            message = self._fetched(self._consumer.poll(_KEEPALIVE_POLL_S))  # serves the group; paused → no data
            if message is not None and not message.error():
                self._stash.append(message)
            if self.stop_requested.is_set():
                stop_deadline = stop_deadline or time.monotonic() + self.settings.shutdown_grace_seconds
                if time.monotonic() > stop_deadline:
                    return None
        if paused:
            self._consumer.resume(self._consumer.assignment())
            self._fetch_watch.batch_done()
        if "error" in result:
            raise result["error"]
        return result["value"]

    def _rewind(self, items: list[Item]) -> None:
        """After an abort, point each owned partition back at the batch's first offset."""
        first = first_offsets(items)
        owned = {(p.topic, p.partition) for p in self._consumer.assignment()}
        self._stash = [m for m in self._stash if (m.topic(), m.partition()) not in first]
        for (topic, partition), offset in first.items():
            if (topic, partition) in owned:
                self._consumer.seek(TopicPartition(topic, partition, offset))

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
"""

from __future__ import annotations

import base64
import json
import logging
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from . import events, metrics
from .checkpoint import Checkpoint
from .crashes import CrashLedger
from .errors import DeskgenError, FatalError, InvalidInputError, TransientError
from .events import Event, Record
from .health import HealthState, serve_http
from .imaging import decode_image
from .kafka import group_id, make_consumer, make_producer_config
from .keys import GENERATED, check_object_key
from .retry import Backoff
from .settings import ImageSettings, KafkaSettings, RuntimeSettings, S3Settings, load
from .stage import Emit, Reject, Stage
from .starvation import FetchWatch
from .storage import ObjectStore

__all__ = ["Runtime", "serve"]

log = logging.getLogger("deskgen.runtime")

_DLQ_PAYLOAD_BYTES = 64 * 1024
_KEEPALIVE_POLL_S = 0.2


@dataclass
class _Item:
    """One consumed message on its way through the batch."""

    message: Message
    received: str
    event: Event | None = None
    outcome: Emit | Reject | InvalidInputError | None = None
    attempts: int = 0
    handle_ms: float = 0.0
    blob_write_ms: float = 0.0
    records: list[tuple[str, Record]] = field(default_factory=list)


class _JobBlobs:
    """The stage's read access to objects: checked keys, size limit, the shared decoder."""

    def __init__(self, store: ObjectStore, images: ImageSettings):
        self._store, self._images = store, images

    def read(self, key: str) -> bytes:
        return self._store.get(check_object_key(key), max_bytes=self._images.max_bytes)

    def image(self, key: str):
        return decode_image(self.read(key), self._images)


class Runtime:
    """Runs one stage against Kafka and S3 until stopped."""

    def __init__(self, stage: Stage, *, runtime: RuntimeSettings, kafka: KafkaSettings, store: ObjectStore,
                 images: ImageSettings):
        self.stage, self.settings, self.kafka, self.store = stage, runtime, kafka, store
        self.health = HealthState(stall_s=max(300.0, kafka.max_poll_interval_ms / 1000))
        self.stop_requested = threading.Event()
        self._blobs = _JobBlobs(store, images)
        self._backoff = Backoff(runtime.retry_max_attempts, runtime.retry_base_ms / 1000, runtime.retry_max_ms / 1000)
        self._batch_max = runtime.batch_max or getattr(stage, "batch_max", 1)
        self._input_topic = runtime.topic(stage.consumes)
        self._source = f"/deskgen/{stage.name}"
        self._stash: list[Message] = []
        self._revoked = False
        self._consumer = None
        self._checkpoint: Checkpoint | None = None
        self._crashes: CrashLedger | None = None
        self._fetch_watch = FetchWatch(runtime.partition_stall_seconds)
        self._fatal: FatalError | None = None
        self._labels = {"stage": stage.name}

    # -- lifecycle ---------------------------------------------------------------------------

    def run(self) -> int:
        """Load the stage, join the group and process batches until ``stop()``; returns the exit code."""
        try:
            started = time.monotonic()
            self.stage.load()
            metrics.MODEL_LOAD.labels(**self._labels).set(time.monotonic() - started)
            self.health.model_loaded = True
            log.info("%s: model loaded in %.1f s", self.stage.name, time.monotonic() - started)
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
        self._checkpoint = Checkpoint(make_producer_config(self.kafka, transactional_id, self._on_client_error),
                                      self.stop_requested, self._backoff)
        self._checkpoint.init()
        if self.stop_requested.is_set():
            return
        self.health.broker_reachable = True
        self._consumer = make_consumer(self.kafka, self.stage.name, stats_cb=self._on_stats, error_cb=self._on_client_error)
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

    # -- callbacks ---------------------------------------------------------------------------

    def _on_assign(self, consumer, partitions) -> None:
        self._fetch_watch.assigned(partitions)
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
        for topic, partition in revoked:
            try:
                metrics.CONSUMER_LAG.remove(self.stage.name, topic, str(partition))
            except KeyError:
                pass
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
        # librdkafka's own consumer_lag needs committed offsets, which transactions never report to it,
        # so lag = last stable offset - the position the application has consumed up to.
        stats = json.loads(stats_json)
        for topic, body in stats.get("topics", {}).items():
            for partition, p in body.get("partitions", {}).items():
                end = p.get("ls_offset", -1)
                position = next((o for o in (p.get("app_offset", -1001), p.get("committed_offset", -1001),
                                             p.get("lo_offset", -1)) if o >= 0), -1)
                if partition != "-1" and end >= 0 and position >= 0:
                    metrics.CONSUMER_LAG.labels(self.stage.name, topic, partition).set(max(end - position, 0))

    # -- the loop ----------------------------------------------------------------------------

    def _step(self) -> None:
        self.health.beat()
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
        started = time.monotonic()
        received = events.now()
        items = [_Item(m, received) for m in batch]
        metrics.INFLIGHT.labels(**self._labels).set(len(items))
        metrics.BATCH_SIZE.labels(**self._labels).observe(len(items))
        self._revoked = False
        try:
            for item in items:
                self._decode(item)
                self._fail_if_it_kills(item)
            done = self._with_keepalive(lambda: self._handle_all([i for i in items if i.outcome is None]))
            if done is None:  # abandoned on shutdown: leave the offsets uncommitted, it is redelivered
                log.warning("%s: shutdown grace exceeded; abandoning a batch of %d", self.stage.name, len(items))
                return
            if self._revoked:  # partitions moved while handling: the new owner redoes the batch
                log.info("%s: partitions revoked during the batch; not committing it", self.stage.name)
                return
            for item in items:
                self._build_records(item)
            committed = self._checkpoint.commit([r for i in items for r in i.records], self._offsets(items), self._consumer)
        finally:
            metrics.INFLIGHT.labels(**self._labels).set(0)
        metrics.TRANSACTIONS.labels(self.stage.name, "committed" if committed else "aborted").inc()
        if not committed:
            self._rewind(items)
            return
        self._crashes.forget(batch)
        elapsed = time.monotonic() - started
        for item in items:
            self._observe(item, elapsed)

    # -- steps of a batch ----------------------------------------------------------------------

    def _decode(self, item: _Item) -> None:
        message = item.message
        try:
            item.event = events.decode(message.value(), message.headers(), self.stage.consumes,
                                       max_bytes=self.settings.max_event_bytes)
        except InvalidInputError as exc:
            item.outcome = exc
            log.warning("%s: bad event at %s[%d]@%d: %s", self.stage.name, message.topic(), message.partition(),
                        message.offset(), exc)

    def _fail_if_it_kills(self, item: _Item) -> None:
        deaths = self._crashes.deaths(item.message)
        if item.outcome is None and deaths >= self._crashes.limit > 0:
            item.outcome = InvalidInputError("stage_crashed", f"the {self.stage.name} process died {deaths} times "
                                             "while handling this event", status="failed")
            log.error("%s: event at %s[%d]@%d was in hand at %d process deaths; sending it to the DLQ",
                      self.stage.name, item.message.topic(), item.message.partition(), item.message.offset(), deaths)

    def _handle_all(self, items: list[_Item]) -> bool:
        """Handle every item, retrying transient failures with backoff; False if stopped meanwhile."""
        pending = items
        for attempt in range(1, self._backoff.attempts + 1):
            for item in pending:
                item.attempts = attempt
            t0 = time.monotonic()
            with self._crashes.holding([i.message for i in pending]):
                outcomes = self._call_stage([i.event for i in pending])
            metrics.INFERENCE.labels(**self._labels).observe(time.monotonic() - t0)
            retry = []
            for item, outcome in zip(pending, outcomes):
                item.handle_ms = (time.monotonic() - t0) * 1000
                if isinstance(outcome, Emit):
                    outcome = self._write_blobs(item, outcome)
                if isinstance(outcome, TransientError):
                    retry.append((item, outcome))
                else:
                    item.outcome = outcome
            if not retry:
                return True
            pending = [item for item, _ in retry]
            last_error = retry[-1][1]
            if attempt == self._backoff.attempts:
                break
            metrics.RETRIES.labels(self.stage.name, "handle").inc(len(pending))
            log.warning("%s: transient failure on %d job(s), attempt %d/%d: %s", self.stage.name, len(pending),
                        attempt, self._backoff.attempts, last_error)
            if not self._backoff.sleep(attempt, self.stop_requested):
                return False
        for item in pending:
            item.outcome = InvalidInputError("retries_exhausted", f"{self._backoff.attempts} attempts: {last_error}",
                                             status="failed")
        return True

    def _call_stage(self, batch: list[Event]) -> list[Any]:
        """The stage's outcomes, one per event; errors are returned in place, never raised."""
        handle_batch: Callable | None = getattr(self.stage, "handle_batch", None)
        if handle_batch is not None and len(batch) > 1:
            try:
                outcomes = handle_batch(batch, self._blobs)
                if len(outcomes) == len(batch):
                    return [_normalised(o) for o in outcomes]
                log.error("%s: handle_batch returned %d outcomes for %d events", self.stage.name, len(outcomes), len(batch))
            except TransientError as exc:
                return [exc] * len(batch)
            except FatalError:
                raise
            except Exception:
                log.warning("%s: batch failed; handling its events one by one", self.stage.name, exc_info=True)
        return [self._call_one(event) for event in batch]

    def _call_one(self, event: Event) -> Any:
        try:
            return self.stage.handle(event, self._blobs)
        except (InvalidInputError, TransientError) as exc:
            return exc
        except FatalError:
            raise
        except DeskgenError as exc:
            return InvalidInputError("stage_error", str(exc), status="failed")
        except Exception as exc:  # a bug or a model crash: not retried, so a poison job cannot loop forever
            log.error("%s: job %s crashed the stage:\n%s", self.stage.name, event.job_id, traceback.format_exc())
            return InvalidInputError("stage_error", f"{type(exc).__name__}: {exc}"[:500], status="failed")

    def _write_blobs(self, item: _Item, outcome: Emit) -> Emit | InvalidInputError | TransientError:
        t0 = time.monotonic()
        job_id = item.event.job_id
        try:
            for blob in outcome.blobs:
                check_object_key(blob.key, prefix=f"{GENERATED}/{job_id}")
                self.store.put(blob.key, blob.data, blob.content_type)
        except (InvalidInputError, TransientError) as exc:
            return exc
        item.blob_write_ms = (time.monotonic() - t0) * 1000
        return outcome

    def _with_keepalive(self, work: Callable[[], bool]) -> bool | None:
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
        return result["value"] or None

    # -- outputs -------------------------------------------------------------------------------

    def _build_records(self, item: _Item) -> None:
        outcome, event = item.outcome, item.event
        stage = self.stage
        timeline = dict(event.data.get("timeline", {})) if event else {}
        timeline[stage.name] = {"received": item.received, "finished": events.now(), "handle_ms": round(item.handle_ms, 2),
                                "blob_write_ms": round(item.blob_write_ms, 2), "attempts": max(item.attempts, 1)}
        traceparent = event.traceparent if event else None
        if isinstance(outcome, InvalidInputError):
            item.records.append(self._dlq_record(item, outcome))
            job_id = event.job_id if event else events.recover_job_id(item.message.key(), item.message.value(),
                                                                      item.message.headers())
            if job_id is not None:
                carried = self._carried(event) if event else {}
                self._add_result(item, job_id, outcome.status, carried, timeline, traceparent,
                                 reason=outcome.reason, detail=outcome.detail)
            return
        carried = self._carried(event)
        if isinstance(outcome, Reject):
            carried.update({stage.section: outcome.section} if outcome.section else {})
            self._add_result(item, event.job_id, "rejected", carried, timeline, traceparent,
                             reason=outcome.reason, detail=outcome.detail)
            return
        data = {**carried, "timeline": timeline, stage.section: outcome.section}
        if stage.produces == "generated":
            self._add_result(item, event.job_id, "succeeded", {**carried, stage.section: outcome.section}, timeline,
                             traceparent)
            return
        try:
            item.records.append((self.settings.topic(stage.produces),
                                 events.encode(stage.produces, data, source=self._source, traceparent=traceparent)))
        except InvalidInputError as exc:  # the stage broke the contract: the job fails, visibly
            item.outcome = InvalidInputError("stage_output_invalid", exc.detail, status="failed")
            self._build_records(item)

    def _carried(self, event: Event) -> dict[str, Any]:
        return {k: v for k, v in event.data.items() if k != "timeline"}

    def _add_result(self, item: _Item, job_id: str, status: str, carried: dict[str, Any], timeline: dict,
                    traceparent: str | None, *, reason: str | None = None, detail: str = "") -> None:
        result = {**carried, "job_id": job_id, "status": status, "stage": self.stage.name,
                  "finished_at": events.now(), "timeline": timeline}
        if reason:
            result.update(reason=reason, detail=detail[:2000])
        try:
            record = events.encode("generated", result, source=self._source, traceparent=traceparent)
        except InvalidInputError as exc:
            if status == "succeeded":
                item.outcome = InvalidInputError("stage_output_invalid", exc.detail, status="failed")
                item.records.clear()
                self._build_records(item)
                return
            minimal = {"job_id": job_id, "status": status, "stage": self.stage.name, "finished_at": result["finished_at"],
                       "timeline": {}, "reason": reason or "result_invalid", "detail": detail[:2000]}
            record = events.encode("generated", minimal, source=self._source, traceparent=traceparent)
        item.records.append((self.settings.topic("generated"), record))

    def _dlq_record(self, item: _Item, error: InvalidInputError) -> tuple[str, Record]:
        message = item.message
        value = message.value() or b""
        data = {
            "job_id": item.event.job_id if item.event else events.recover_job_id(message.key(), value, message.headers()),
            "stage": self.stage.name, "reason": error.reason, "detail": error.detail[:2000], "status": error.status,
            "source": {"topic": message.topic(), "partition": message.partition(), "offset": message.offset()},
            "failed_at": events.now(),
            "key_b64": base64.b64encode(message.key()).decode() if message.key() else None,
            "headers": {name: (raw or b"").decode("utf-8", "replace")[:512] for name, raw in (message.headers() or [])[:32]},
            "payload_b64": base64.b64encode(value[:_DLQ_PAYLOAD_BYTES]).decode(),
            "payload_truncated": len(value) > _DLQ_PAYLOAD_BYTES,
        }
        return self.settings.topic("dlq"), events.encode("dlq", data, source=self._source)

    # -- after the transaction -----------------------------------------------------------------

    def _offsets(self, items: list[_Item]) -> list[TopicPartition]:
        next_offsets: dict[tuple[str, int], int] = {}
        for item in items:
            key = (item.message.topic(), item.message.partition())
            next_offsets[key] = max(next_offsets.get(key, 0), item.message.offset() + 1)
        return [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]

    def _rewind(self, items: list[_Item]) -> None:
        """After an abort, point each partition back at the batch's first offset."""
        first: dict[tuple[str, int], int] = {}
        for item in items:
            key = (item.message.topic(), item.message.partition())
            first[key] = min(first.get(key, item.message.offset()), item.message.offset())
        owned = {(p.topic, p.partition) for p in self._consumer.assignment()}
        self._stash = [m for m in self._stash if (m.topic(), m.partition()) not in first]
        for (topic, partition), offset in first.items():
            if (topic, partition) in owned:
                self._consumer.seek(TopicPartition(topic, partition, offset))

    def _observe(self, item: _Item, elapsed: float) -> None:
        outcome = item.outcome
        if isinstance(outcome, InvalidInputError):
            label = outcome.status
            metrics.DLQ.labels(self.stage.name, outcome.reason).inc()
        elif isinstance(outcome, Reject):
            label = "rejected"
        else:
            label = "ok"
        metrics.EVENTS.labels(self.stage.name, label).inc()
        metrics.STAGE_DURATION.labels(self.stage.name, label).observe(elapsed)
        for topic, record in item.records:
            if record.kind != "generated":
                continue
            status = "succeeded" if label == "ok" else label
            reason = outcome.reason if isinstance(outcome, (InvalidInputError, Reject)) else ""
            metrics.RESULTS.labels(self.stage.name, status, reason).inc()
            uploaded_at = item.event.data.get("uploaded_at") if item.event else None
            if uploaded_at:
                age = time.time() - datetime.fromisoformat(uploaded_at.replace("Z", "+00:00")).timestamp()
                metrics.JOB_E2E.labels(self.stage.name, status).observe(max(age, 0.0))
        log.info("%s: job %s → %s%s (%.0f ms)", self.stage.name,
                 item.event.job_id if item.event else "?", label,
                 f" ({outcome.reason})" if isinstance(outcome, (InvalidInputError, Reject)) else "", elapsed * 1000)


def _normalised(outcome: Any) -> Any:
    if isinstance(outcome, (Emit, Reject, InvalidInputError, TransientError)):
        return outcome
    if isinstance(outcome, FatalError):
        raise outcome
    return InvalidInputError("stage_error", f"{type(outcome).__name__}: {outcome}"[:500], status="failed")


def serve(stage: Stage) -> int:
    """Run ``stage`` as a service: settings from the environment, HTTP endpoints, SIGTERM handling."""
    try:
        runtime_settings = load(RuntimeSettings)
        logging.basicConfig(level=runtime_settings.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")
        store = ObjectStore(load(S3Settings))
        runtime = Runtime(stage, runtime=runtime_settings, kafka=load(KafkaSettings), store=store,
                          images=load(ImageSettings))
    except FatalError as exc:
        logging.basicConfig()
        log.error("cannot start %s: %s", stage.name, exc)
        return 2
    server = serve_http(runtime.health, runtime_settings.http_host, runtime_settings.http_port)
    log.info("%s: /metrics /healthz /readyz on %s:%d", stage.name, *server.server_address[:2])
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: runtime.stop())
    try:
        return runtime.run()
    finally:
        server.shutdown()

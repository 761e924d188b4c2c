"""What runs beside the chaos fleet: the faults (a broker restart, an S3 outage), the catalogue churn and
the watcher that notes when each job's result arrives."""

from __future__ import annotations

import json
import random
import threading
import time

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

import localstack
from deskgen.common.catalogue import product_record, tombstone_record
from chaos_plan import Options
from deskgen.common.kafka import make_producer, make_reader
from pipeline import ROOT, Pipeline

__all__ = ["CatalogueChurn", "Faults", "ResultWatcher"]


class Faults(threading.Thread):
    """Stops and restarts the broker at 20 % of the window, takes S3 away at 50 %; always restores both."""

    def __init__(self, start: float, options: Options, say):
        super().__init__(name="chaos-faults")
        self.begin, self.options, self.say = start, options, say
        self._abort = threading.Event()
        self.kafka_down = self.s3_down = False
        self.broker_outage_s: float | None = None
        self.s3_outage_s: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        window = self.options.window_s
        try:
            if self.options.broker_restart and not self._abort.wait(max(0.0, self.begin + 0.2 * window - time.monotonic())):
                self.broker_outage_s = self._outage("kafka", localstack.stop_kafka, localstack.start_kafka, 0.0)
            if self.options.s3_outage_s > 0 and not self._abort.wait(max(0.0, self.begin + 0.5 * window - time.monotonic())):
                self.s3_outage_s = self._outage("s3", localstack.stop_s3, localstack.start_s3, self.options.s3_outage_s)
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        finally:
            self.restore()

    def _outage(self, name: str, stop, start, hold_s: float) -> float:
        self.say(f"{name}: stopping it" + (f" for {hold_s:.0f} s" if hold_s else " and starting it again"))
        began = time.monotonic()
        setattr(self, f"{name}_down", True)
        stop()
        self._abort.wait(hold_s)
        start()
        setattr(self, f"{name}_down", False)
        outage = time.monotonic() - began
        self.say(f"{name}: back after {outage:.1f} s")
        return outage

    def restore(self) -> None:
        """Start whatever this run stopped (idempotent)."""
        if self.kafka_down:
            localstack.start_kafka()
            self.kafka_down = False
        if self.s3_down:
            localstack.start_s3()
            self.s3_down = False

    def abort(self) -> None:
        self._abort.set()
        self.join()


class CatalogueChurn(threading.Thread):
    """Loads the sample catalogue, then keeps publishing updates to it for the whole run: price
    changes, availability flips, deletes (tombstones) and re-adds, through one producer that rides
    out the broker restart. The captioners replay and follow it while they are killed."""

    def __init__(self, pipeline: Pipeline, interval_s: float = 0.5, seed: int = 0):
        super().__init__(name="chaos-catalogue", daemon=True)
        self.topic, self.interval_s, self.rng = pipeline.topic("products"), interval_s, random.Random(seed)
        self.products = [json.loads(line) for line in (ROOT / "stack" / "sample-catalogue.jsonl").read_text().splitlines()]
        self._producer = make_producer(pipeline.kafka, **{"message.timeout.ms": 600000, "log_level": 2})
        self._halt = threading.Event()
        self.published = 0
        self.failures: list[str] = []
        for product in self.products:
            self._send(product_record(product))

    def _send(self, record) -> None:
        self._producer.produce(self.topic, key=record.key, value=record.value, headers=record.headers,
                               on_delivery=lambda err, msg: err and self.failures.append(str(err)))
        self._producer.poll(0)
        self.published += 1

    def run(self) -> None:
        deleted: set[str] = set()
        while not self._halt.wait(self.interval_s):
            product = self.rng.choice(self.products)
            if product["id"] not in deleted and self.rng.random() < 0.15:
                deleted.add(product["id"])
                self._send(tombstone_record(product["id"]))
                continue
            deleted.discard(product["id"])
            price = {**product["price"], "amount": round(product["price"]["amount"] * self.rng.uniform(0.8, 1.2), 2)}
            self._send(product_record({**product, "price": price, "available": self.rng.random() > 0.2}))

    def stop(self) -> None:
        self._halt.set()
        self.join()
        left = self._producer.flush(120)
        if left or self.failures:
            raise RuntimeError(f"{left} catalogue update(s) undelivered; failures: {self.failures[:3]}")


class ResultWatcher(threading.Thread):
    """Follows `generated` as a read_committed reader; notes when each job's first result arrives.

    It reads in short sessions, each with a new consumer that starts where the last one stopped: after
    a broker restart a librdkafka consumer here once stayed stuck (it saw no new records for minutes
    while a fresh one read them all), and latencies must not depend on that.
    """

    _SESSION_S = 5.0

    def __init__(self, pipeline: Pipeline):
        super().__init__(name="chaos-results", daemon=True)
        self.pipeline = pipeline
        self.arrived: dict[str, float] = {}  # job id → wall-clock time
        self._stopped = threading.Event()

    def run(self) -> None:
        topic = self.pipeline.topic("generated")
        config = {"group.id": f"{self.pipeline.prefix}watcher", "log_level": 2}  # quiet while the broker is away
        probe = make_reader(self.pipeline.kafka, **config)
        positions = {p: OFFSET_BEGINNING for p in probe.list_topics(topic, timeout=30).topics[topic].partitions}
        probe.close()
        while not self._stopped.is_set():
            consumer = make_reader(self.pipeline.kafka, **config)
            consumer.assign([TopicPartition(topic, p, offset) for p, offset in positions.items()])
            session_end = time.monotonic() + self._SESSION_S
            try:
                while time.monotonic() < session_end and not self._stopped.is_set():
                    message = consumer.poll(0.2)
                    if message is not None and not message.error():
                        self.arrived.setdefault(message.key().decode(), time.time())
                        positions[message.partition()] = message.offset() + 1
            finally:
                consumer.close()

    def stop(self) -> None:
        self._stopped.set()
        self.join()

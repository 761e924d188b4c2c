#!/usr/bin/env python3
"""The chaos run (``make chaos``): the three real services as processes on the local stack, faults
injected while jobs flow, then the delivery guarantee checked from the outside.

1. **baseline**: N jobs at a steady rate, no faults: the end-to-end latency to compare with.
2. **chaos**: N more jobs spread over the fault window while ``kill -9`` hits a random live stage
   process at random moments (each is restarted at once under its slot's DESKGEN_INSTANCE_ID, so it
   fences its predecessor's transaction), the Kafka broker is stopped and restarted, and the S3 server
   is down for a while. A process that exits on its own is restarted too, and counted.
3. **checks**, from a fresh ``read_committed`` reader and from S3: every job has exactly one terminal
   result, and the expected one (drawn desks succeed, other photos are ``not_desk``, corrupt files are
   rejected by the decoder); every generated image exists and decodes; each corrupt file has exactly one
   DLQ record; no consumer group has committed records left to consume; no partition holds an open
   transaction.

Services: the real ``deskgen run <stage>`` with the classifier's packaged EfficientNet-Lite0 ImageNet
weights and tiny random dev weights for the captioner and generator (``stack/devenv.py``). Prints progress
lines and a markdown figures table; exits 1 when a check fails. Logs stay in ``.stack/chaos/<time>/``.

Stopping Kafka and S3 affects everyone on the shared local stack; both are restarted in a ``finally``.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import random
import re
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "stack"))

import localstack  # noqa: E402
from devenv import dev_model_env  # noqa: E402
from samples import draw_desk  # noqa: E402
from pipeline import Pipeline, Service  # noqa: E402

from deskgen.common import events  # noqa: E402
from deskgen.common.catalogue import product_record, tombstone_record  # noqa: E402

__all__ = ["Options", "Report", "run", "main"]

PARTITIONS = 2
SLOTS = {"classifier": 2, "captioner": 1, "generator": 2}  # processes per stage
CONSUMES = {"classifier": "uploaded", "captioner": "classified", "generator": "captioned"}
PRESETS = ("ott_3d", "mix", "dalle_only")
DESK_SEEDS = range(1, 9)
_ASSIGNED = re.compile(r": assigned \[")


def _say(message: str) -> None:
    print(f"[chaos] {message}", flush=True)


@dataclass(frozen=True)
class Options:
    """What one run does; the defaults are the full run (about 9 minutes on 2 cores)."""

    jobs: int = 300  # per phase
    kills: int = 100
    broker_restart: bool = True
    s3_outage_s: float = 30.0
    seed: int = 1
    kill_interval_s: float = 3.5  # mean time between kills: the fault window is kills × this
    baseline_rate: float = 2.5  # jobs/s in the fault-free phase
    drain_timeout_s: float = 180.0  # after the window: longer than any designed recovery, shorter than a hang

    @property
    def window_s(self) -> float:
        """Length of the chaos phase: long enough for the kills, the broker restart and the S3 outage."""
        needed = [self.kills * self.kill_interval_s, 2 * (self.s3_outage_s + 5)]
        if self.broker_restart:
            needed.append(50.0)  # stop at 20 % of the window, back and settled before the S3 outage at 50 %
        return max(needed)


def service_env(model_env: dict[str, str], options: Options) -> dict[str, str]:
    """Settings of every stage process: fast failure detection and retries that outlast the S3 outage."""
    return {
        **model_env,
        "DESKGEN_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "DESKGEN_KAFKA_TRANSACTION_TIMEOUT_MS": "10000",
        "DESKGEN_RETRY_BASE_MS": "200",
        "DESKGEN_RETRY_MAX_MS": "2000",
        "DESKGEN_RETRY_MAX_ATTEMPTS": str(10 + math.ceil(options.s3_outage_s)),  # ≤ 2 s apart: ~2× the outage
        "DESKGEN_S3_TIMEOUT_SECONDS": "2",
        "DESKGEN_CLASSIFIER_BACKEND": "torch",  # ready in ~3 s; the ONNX export would add ~3 s to every restart
        "DESKGEN_CLASSIFIER_THREADS": "1",
        "DESKGEN_CAPTIONER_THREADS": "1",
        "DESKGEN_GENERATOR_THREADS": "1",
    }


# --- jobs -----------------------------------------------------------------------------------------


@dataclass
class Job:
    """One submitted photo and what its terminal result must say."""

    id: str
    phase: str
    kind: str  # desk | not_desk | corrupt
    photo: bytes
    ext: str
    preset: str
    published: float | None = None  # wall-clock time of the `uploaded` event

    def event(self, image_key: str) -> dict:
        uploaded_at = datetime.fromtimestamp(self.published, timezone.utc).isoformat(timespec="milliseconds")
        return {"job_id": self.id, "image_key": image_key, "uploaded_at": uploaded_at.replace("+00:00", "Z"),
                "request": {"preset": self.preset}, "timeline": {}}

    def unexpected(self, result: dict) -> str | None:
        """Why ``result`` is not this job's expected outcome, or None."""
        status, reason = result.get("status"), result.get("reason") or ""
        if self.kind == "desk":
            key = (result.get("output") or {}).get("image_key")
            ok = status == "succeeded" and key == f"generated/{self.id}/{self.preset}.png" \
                and isinstance(result["output"].get("products"), list)  # the captioner's recommender ran
        elif self.kind == "not_desk":
            ok = status == "rejected" and reason == "not_desk"
        else:
            ok = status == "rejected" and reason.startswith("image_")
        return None if ok else f"{self.kind} ended {status} {reason} {result.get('detail', '')[:120]}".strip()


def _encoded(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, quality=90)
    return buffer.getvalue()


def sample_photos() -> dict[str, list[tuple[bytes, str]]]:
    """(bytes, extension) per kind: drawn desks, scikit-image's coffee and rocket, and corrupt files."""
    from skimage import data

    desks = [(_encoded(draw_desk(seed=seed)), "jpg") for seed in DESK_SEEDS]
    not_desks = [(_encoded(Image.fromarray(getattr(data, name)())), "jpg") for name in ("coffee", "rocket")]
    corrupt = [(b"this is a text file with a .jpg name\n", "jpg"), (desks[0][0][: len(desks[0][0]) // 2], "jpg")]
    return {"desk": desks, "not_desk": not_desks, "corrupt": corrupt}


def make_jobs(phase: str, count: int, photos: dict[str, list[tuple[bytes, str]]], rng: random.Random) -> list[Job]:
    """``count`` jobs in random order: a couple of corrupt files, some non-desk photos, the rest desks."""
    corrupt, not_desk = max(2, round(count * 0.02)), max(2, round(count * 0.08))
    kinds = ["corrupt"] * corrupt + ["not_desk"] * not_desk + ["desk"] * max(0, count - corrupt - not_desk)
    rng.shuffle(kinds)
    jobs = []
    for number, kind in enumerate(kinds[:count]):
        photo, ext = rng.choice(photos[kind])
        jobs.append(Job(f"{phase}-{number:04d}-{kind}", phase, kind, photo, ext, rng.choice(PRESETS)))
    return jobs


# --- processes ------------------------------------------------------------------------------------


@dataclass
class _Slot:
    stage: str
    instance: str
    service: Service | None = None

    @property
    def name(self) -> str:
        return f"{self.stage}-{self.instance}"


class Fleet:
    """The stage processes, one per slot; a slot keeps its DESKGEN_INSTANCE_ID across restarts.

    After ``start`` only the supervisor thread changes the slots.
    """

    def __init__(self, pipeline: Pipeline, env: dict[str, str]):
        self.pipeline, self.env = pipeline, env
        self.slots = [_Slot(stage, str(n)) for stage, count in SLOTS.items() for n in range(count)]
        self.kills = 0
        self.crashes: list[str] = []  # processes that exited on their own: "slot: exit code, last log line"

    def start(self) -> None:
        for slot in self.slots:
            self._start(slot)

    def _start(self, slot: _Slot) -> None:
        slot.service = self.pipeline.start(slot.stage, instance=slot.instance, real=True, **self.env)

    @staticmethod
    def is_up(slot: _Slot) -> bool:
        """Alive and has joined its consumer group (so its transactional id is initialised)."""
        return slot.service.process.poll() is None and _ASSIGNED.search(slot.service.log()) is not None

    def wait_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(self.is_up(slot) for slot in self.slots):
            if time.monotonic() > deadline:
                down = [slot.name for slot in self.slots if not self.is_up(slot)]
                raise RuntimeError(f"not up after {timeout:.0f} s: {down}\n{self.pipeline.describe_failure()}")
            time.sleep(0.2)

    def kill_one(self, rng: random.Random) -> str | None:
        """kill -9 a random process that is up and restart its slot; None when none is up."""
        candidates = [slot for slot in self.slots if self.is_up(slot)]
        if not candidates:
            return None
        victim = rng.choice(candidates)
        victim.service.kill()
        self.kills += 1
        self._start(victim)
        return victim.name

    def reap(self) -> list[str]:
        """Restart processes that exited on their own; returns what happened to them."""
        reaped = []
        for slot in self.slots:
            code = slot.service.process.poll()
            if code is not None:
                lines = slot.service.log().strip().splitlines() or [""]
                reaped.append(f"{slot.name}: exit code {code}: {lines[-1][-200:]}")
                self._start(slot)
        self.crashes += reaped
        return reaped

    def stop(self) -> None:
        self.pipeline.stop_all()


class Supervisor(threading.Thread):
    """Restarts crashed processes; kills one random live process at each moment of the kill schedule."""

    def __init__(self, fleet: Fleet, rng: random.Random, say):
        super().__init__(name="chaos-supervisor", daemon=True)
        self.fleet, self.rng, self.say = fleet, rng, say
        self._due: list[float] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.error: BaseException | None = None

    def schedule_kills(self, moments: list[float]) -> None:
        with self._lock:
            self._due = sorted(moments)

    @property
    def kills_pending(self) -> int:
        with self._lock:
            return len(self._due)

    def run(self) -> None:
        try:
            while not self._stopped.wait(0.1):
                for crash in self.fleet.reap():
                    self.say(f"process exited on its own, restarted: {crash}")
                with self._lock:
                    due = bool(self._due) and time.monotonic() >= self._due[0]
                if due and self.fleet.kill_one(self.rng) is not None:
                    with self._lock:
                        self._due.pop(0)
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def stop(self) -> None:
        self._stopped.set()
        self.join()


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
        from confluent_kafka import Producer

        self.topic, self.interval_s, self.rng = pipeline.topic("products"), interval_s, random.Random(seed)
        self.products = [json.loads(line) for line in (ROOT / "stack" / "sample-catalogue.jsonl").read_text().splitlines()]
        self._producer = Producer({"bootstrap.servers": pipeline.bootstrap, "enable.idempotence": True,
                                   "message.timeout.ms": 600000, "log_level": 2})
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
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        from deskgen.common.kafka import make_reader

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


# --- phases ---------------------------------------------------------------------------------------


@dataclass
class PhaseFigures:
    name: str
    jobs: list[Job]
    rate: float
    wall_s: float = 0.0
    kills: int = 0
    crashes: int = 0
    broker_outage_s: float | None = None
    s3_outage_s: float | None = None
    latencies: list[float] = field(default_factory=list)


class _Run:
    """One run's moving parts; ``phase`` publishes jobs on a schedule and waits for their results."""

    def __init__(self, pipeline: Pipeline, options: Options, fleet: Fleet, supervisor: Supervisor,
                 watcher: ResultWatcher, say):
        self.pipeline, self.options, self.fleet = pipeline, options, fleet
        self.supervisor, self.watcher, self.say = supervisor, watcher, say
        self.faults: Faults | None = None

    def phase(self, name: str, jobs: list[Job], duration_s: float, *, chaos: bool) -> PhaseFigures:
        figures = PhaseFigures(name, jobs, len(jobs) / duration_s)
        keys = {job.id: self.pipeline.upload(job.photo, job.id, ext=job.ext) for job in jobs}
        kills_before, crashes_before = self.fleet.kills, len(self.fleet.crashes)
        self.say(f"{name}: {len(jobs)} jobs over {duration_s:.0f} s ({figures.rate:.2f} jobs/s)"
                 + (f", {self.options.kills} kills, broker restart: {self.options.broker_restart}, "
                    f"S3 outage: {self.options.s3_outage_s:.0f} s" if chaos else ""))
        publisher = self.pipeline.publisher()
        start = time.monotonic()
        if chaos:
            rng = random.Random(self.options.seed + 1)
            self.supervisor.schedule_kills([start + rng.uniform(0, duration_s) for _ in range(self.options.kills)])
            self.faults = Faults(start, self.options, self.say)
            self.faults.start()
        progress = _Progress(self, name, jobs, start)
        for number, job in enumerate(jobs):
            while time.monotonic() < start + (number + 0.5) * duration_s / len(jobs):
                progress.tick()
                time.sleep(0.05)
            job.published = time.time()
            publisher.publish(events.encode("uploaded", job.event(keys[job.id]), source="/chaos"), wait=False)
        publisher.flush(max(60.0, self.options.drain_timeout_s))
        publisher.close()
        deadline = time.monotonic() + self.options.drain_timeout_s
        while not self._settled(jobs, chaos) and time.monotonic() < deadline:
            progress.tick()
            time.sleep(0.2)
        progress.tick(force=True)
        arrived = [self.watcher.arrived[job.id] for job in jobs if job.id in self.watcher.arrived]
        figures.wall_s = (max(arrived) if arrived else time.time()) - min(job.published for job in jobs)
        figures.latencies = [self.watcher.arrived[job.id] - job.published for job in jobs if job.id in self.watcher.arrived]
        figures.kills = self.fleet.kills - kills_before
        figures.crashes = len(self.fleet.crashes) - crashes_before
        if chaos:
            self.faults.join()
            figures.broker_outage_s, figures.s3_outage_s = self.faults.broker_outage_s, self.faults.s3_outage_s
        return figures

    def _settled(self, jobs: list[Job], chaos: bool) -> bool:
        if not all(job.id in self.watcher.arrived for job in jobs):
            return False
        return not chaos or (self.supervisor.kills_pending == 0 and not self.faults.is_alive())


class _Progress:
    """A progress line every 10 s."""

    def __init__(self, run: _Run, name: str, jobs: list[Job], start: float):
        self.run, self.name, self.jobs, self.start = run, name, jobs, start
        self.next_at = start + 10

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self.next_at:
            return
        self.next_at = now + 10
        run = self.run
        published = sum(job.published is not None for job in self.jobs)
        results = sum(job.id in run.watcher.arrived for job in self.jobs)
        faults = run.faults
        state = (f" | kafka {'DOWN' if faults.kafka_down else 'up'}, s3 {'DOWN' if faults.s3_down else 'up'}"
                 if faults is not None and faults.is_alive() else "")
        run.say(f"{self.name} {now - self.start:5.0f}s | published {published}/{len(self.jobs)} | results "
                f"{results}/{len(self.jobs)} | kills {run.fleet.kills} | crash restarts {len(run.fleet.crashes)}{state}")


# --- checks ---------------------------------------------------------------------------------------


@dataclass
class Verdict:
    """What the checks found; empty everywhere when the guarantee held."""

    lost: list[str] = field(default_factory=list)
    duplicated: dict[str, int] = field(default_factory=dict)
    unexpected: dict[str, str] = field(default_factory=dict)
    bad_images: dict[str, str] = field(default_factory=dict)
    strangers: list[str] = field(default_factory=list)  # results for job ids never submitted
    dlq_mismatches: dict[str, int] = field(default_factory=dict)
    backlog: dict[str, int] = field(default_factory=dict)  # stage → committed records its group has left
    open_transactions: list[str] = field(default_factory=list)

    def failures(self) -> list[str]:
        problems = {"lost": self.lost, "duplicated": self.duplicated, "unexpected outcome": self.unexpected,
                    "image missing or undecodable": self.bad_images, "results for unknown jobs": self.strangers,
                    "DLQ records ≠ 1 per corrupt file": self.dlq_mismatches,
                    "backlog": {stage: n for stage, n in self.backlog.items() if n},
                    "open transactions": self.open_transactions}
        return [f"{what}: {found}" for what, found in problems.items() if found]


def verify(pipeline: Pipeline, jobs: list[Job], settle_s: float = 5.0) -> Verdict:
    """Check the delivery guarantee for ``jobs`` from a fresh read_committed reader and from S3."""
    verdict = Verdict()
    by_job = pipeline.results([job.id for job in jobs], timeout=120, settle=settle_s)
    expected = {job.id: job for job in jobs}
    verdict.strangers = sorted(set(by_job) - set(expected))
    for job in jobs:
        results = by_job[job.id]
        if not results:
            verdict.lost.append(job.id)
            continue
        if len(results) > 1:
            verdict.duplicated[job.id] = len(results)
        problem = job.unexpected(results[0])
        if problem:
            verdict.unexpected[job.id] = problem
        elif job.kind == "desk":
            problem = _image_problem(pipeline, results[0]["output"]["image_key"])
            if problem:
                verdict.bad_images[job.id] = problem
    corrupt = {job.id for job in jobs if job.kind == "corrupt"}
    dlq = Counter(record["data"]["job_id"] for record in
                  pipeline.read("dlq", until=lambda rs: len(rs) >= len(corrupt), timeout=60, settle=settle_s))
    verdict.dlq_mismatches = {job: dlq[job] for job in corrupt | set(dlq) if dlq[job] != (job in corrupt)}
    verdict.backlog = {stage: pipeline.backlog(f"{pipeline.prefix}{stage}", kind) for stage, kind in CONSUMES.items()}
    verdict.open_transactions = pipeline.open_transactions()
    return verdict


def _image_problem(pipeline: Pipeline, key: str) -> str | None:
    try:
        with Image.open(io.BytesIO(pipeline.store.get(key))) as image:
            image.load()
            return None if image.format == "PNG" else f"{key}: {image.format}, not PNG"
    except Exception as exc:  # missing object or broken image: both are findings
        return f"{key}: {type(exc).__name__}: {exc}"[:300]


# --- the run --------------------------------------------------------------------------------------


@dataclass
class Report:
    options: Options
    baseline: PhaseFigures
    chaos: PhaseFigures
    verdict: Verdict
    crashes: list[str]
    started: datetime

    @property
    def ok(self) -> bool:
        return not self.verdict.failures()

    def table(self) -> str:
        """The figures as markdown: one column per phase, then the checks."""
        v = self.verdict

        def count(phase: PhaseFigures, found) -> str:
            return str(sum(job.id in found for job in phase.jobs))

        def mix(phase: PhaseFigures) -> str:
            kinds = Counter(job.kind for job in phase.jobs)
            return f"{len(phase.jobs)} ({kinds['desk']} desk, {kinds['not_desk']} not desk, {kinds['corrupt']} corrupt)"

        def latency(phase: PhaseFigures) -> str:
            values = sorted(phase.latencies)
            if not values:
                return "—"
            p95 = values[min(len(values) - 1, math.ceil(0.95 * len(values)) - 1)]
            return f"{statistics.median(values):.2f} / {p95:.2f} / {values[-1]:.2f}"

        def outage(seconds: float | None) -> str:
            return "—" if seconds is None else f"{seconds:.1f} s"

        rows = [
            ("jobs", mix),
            ("submission rate", lambda p: f"{p.rate:.2f} jobs/s"),
            ("kill -9 (each restarted)", lambda p: str(p.kills)),
            ("restarts after a crash (exited on its own)", lambda p: str(p.crashes)),
            ("Kafka broker stopped → serving again", lambda p: outage(p.broker_outage_s)),
            ("S3 server stopped → serving again", lambda p: outage(p.s3_outage_s)),
            ("lost (no terminal result)", lambda p: count(p, v.lost)),
            ("duplicated (> 1 terminal result)", lambda p: count(p, v.duplicated)),
            ("unexpected outcome", lambda p: count(p, v.unexpected)),
            ("generated image missing or undecodable", lambda p: count(p, v.bad_images)),
            ("end-to-end latency p50 / p95 / max (s)", latency),
            ("first upload → last result", lambda p: f"{p.wall_s:.0f} s"),
        ]
        lines = ["| | baseline (no faults) | chaos |", "|---|---|---|"]
        lines += [f"| {label} | {cell(self.baseline)} | {cell(self.chaos)} |" for label, cell in rows]
        backlog = ", ".join(f"{stage} on {CONSUMES[stage]}: {n}" for stage, n in v.backlog.items())
        lines += ["", f"After the run: committed backlog per stage group ({backlog}); partitions with an open "
                      f"transaction: {len(v.open_transactions)}; DLQ records ≠ 1 per corrupt file: "
                      f"{len(v.dlq_mismatches)}; results for unknown jobs: {len(v.strangers)}.",
                  f"Layout: {', '.join(f'{stage} ×{n}' for stage, n in SLOTS.items())} processes, {PARTITIONS} "
                  f"partitions per topic, seed {self.options.seed}. Machine: {_machine()}, {self.started:%Y-%m-%d}."]
        return "\n".join(lines)


def _machine() -> str:
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs {model}".strip()


def run(pipeline: Pipeline, options: Options, model_env: dict[str, str], say=_say) -> Report:
    """The whole run on ``pipeline`` (its own topics and bucket); stops its processes before returning."""
    started = datetime.now(timezone.utc)
    rng = random.Random(options.seed)
    photos = sample_photos()
    baseline_jobs = make_jobs("baseline", options.jobs, photos, rng)
    chaos_jobs = make_jobs("chaos", options.jobs, photos, rng)
    pipeline.create_topics(partitions=PARTITIONS)
    churn = CatalogueChurn(pipeline, seed=options.seed)
    fleet = Fleet(pipeline, service_env(model_env, options))
    watcher = ResultWatcher(pipeline)
    supervisor = Supervisor(fleet, rng, say)
    state = _Run(pipeline, options, fleet, supervisor, watcher, say)
    say(f"starting {sum(SLOTS.values())} stage processes (topics {pipeline.prefix}*, logs in {pipeline.workdir})")
    fleet.start()
    watcher.start()
    supervisor.start()
    churn.start()
    try:
        fleet.wait_up(timeout=300)
        baseline = state.phase("baseline", baseline_jobs, options.jobs / options.baseline_rate, chaos=False)
        chaos = state.phase("chaos", chaos_jobs, options.window_s, chaos=True)
        say("waiting until every slot has joined its group again, then checking")
        fleet.wait_up(timeout=120)
        verdict = verify(pipeline, baseline_jobs + chaos_jobs)
    finally:
        if state.faults is not None:
            state.faults.abort()
        supervisor.stop()
        watcher.stop()
        fleet.stop()
        churn.stop()
    say(f"catalogue: {churn.published} records published ({len(churn.products)} products, then updates "
        "every 0.5 s through both phases)")
    for error in (supervisor.error, state.faults.error if state.faults else None):
        if error is not None:
            raise RuntimeError(f"chaos machinery failed: {error!r}") from error
    return Report(options, baseline, chaos, verdict, list(fleet.crashes), started)


def _options(argv: list[str] | None) -> Options:
    defaults = Options()
    parser = argparse.ArgumentParser(prog="chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=defaults.jobs, help="jobs per phase (default %(default)s)")
    parser.add_argument("--kills", type=int, default=defaults.kills, help="kill -9s in the chaos phase (default %(default)s)")
    parser.add_argument("--no-broker-restart", action="store_true", help="leave the Kafka broker alone")
    parser.add_argument("--s3-outage-s", type=float, default=defaults.s3_outage_s,
                        help="seconds the S3 server is down (0: no outage; default %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the job mix and the kill schedule")
    parser.add_argument("--kill-interval-s", type=float, default=defaults.kill_interval_s,
                        help="mean seconds between kills (default %(default)s)")
    parser.add_argument("--baseline-rate", type=float, default=defaults.baseline_rate,
                        help="jobs/s in the fault-free phase (default %(default)s)")
    args = parser.parse_args(argv)
    if args.jobs < 4 or args.kills < 0 or args.s3_outage_s < 0 or args.kill_interval_s <= 0 or args.baseline_rate <= 0:
        parser.error("need --jobs ≥ 4, --kills ≥ 0, --s3-outage-s ≥ 0 and positive intervals and rates")
    return Options(jobs=args.jobs, kills=args.kills, broker_restart=not args.no_broker_restart,
                   s3_outage_s=args.s3_outage_s, seed=args.seed, kill_interval_s=args.kill_interval_s,
                   baseline_rate=args.baseline_rate)


def main(argv: list[str] | None = None) -> int:
    options = _options(argv)
    # Ctrl-C and SIGTERM unwind through the `finally`s (restart Kafka/S3, stop the services), also when
    # started in the background, where the shell leaves SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    began = time.monotonic()
    localstack.up()
    env = localstack.deskgen_env()
    os.environ.update(env)
    model_env = dev_model_env()
    workdir = ROOT / ".stack" / "chaos" / datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    report = run(Pipeline(env, workdir), options, model_env)
    for crash in report.crashes:
        _say(f"exited on its own: {crash}")
    for failure in report.verdict.failures():
        _say(f"FAILED: {failure}")
    print(f"\n{report.table()}\n", flush=True)
    _say(f"{'all checks passed' if report.ok else 'CHECKS FAILED'} in {time.monotonic() - began:.0f} s; logs in {workdir}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""An isolated pipeline on the real local stack: its own topics and bucket, stage processes, a backend
client (common/backend.py) and readers of the results. Used by the chaos run (stack/chaos.py) and, through
tests/support/pipeline.py (which adds the test stages), by the integration, e2e and chaos tests."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, ConsumerGroupTopicPartitions, IsolationLevel, KafkaError, TopicPartition
from confluent_kafka.admin import OffsetSpec
from PIL import Image
from pydantic import SecretStr

import processes
from deskgen.common import events, topology
from deskgen.common.backend import Backend, BackendSettings, sniff_format, upload_content_type
from deskgen.common.kafka import make_admin, make_producer, make_reader
from deskgen.common.keys import upload_key

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def answers_ok(url: str) -> bool:
    """Whether ``url`` answers 200 within 2 s (a server still starting does not)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def photo_bytes(color=(40, 160, 60), size=(96, 64), fmt="JPEG") -> bytes:
    """A small generated photo; green passes the test classifier, red does not."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


@dataclasses.dataclass
class Service:
    """One stage process and its log."""

    name: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def http_port(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"/readyz on [0-9.]+:(\d+)", self.log())
            if match:
                return int(match.group(1))
            time.sleep(0.1)
        raise AssertionError(f"{self.name} never reported its HTTP port:\n{self.log()[-3000:]}")

    def wait_ready(self, timeout: float = 240.0) -> None:
        """Until /readyz answers 200 (models loaded, group joined)."""
        port = self.http_port(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited:\n{self.log()[-3000:]}")
            if answers_ok(f"http://127.0.0.1:{port}/readyz"):
                return
            time.sleep(0.5)
        raise AssertionError(f"{self.name} not ready within {timeout:.0f} s:\n{self.log()[-3000:]}")

    def wait_log(self, pattern: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.log()):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: {pattern!r} not seen:\n{self.log()[-3000:]}")

    def kill(self) -> None:
        processes.stop(self.process.pid, 0)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, SIGKILL after ``timeout``; its exit code."""
        processes.stop(self.process.pid, timeout)
        return self.process.wait()


@dataclasses.dataclass
class Pipeline:
    """Isolated topics (random prefix) and bucket on the shared local Kafka and S3 servers."""

    base_env: dict[str, str]
    workdir: Path
    prefix: str = dataclasses.field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}.")
    services: list[Service] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.bucket = self.prefix.rstrip(".").replace("_", "-")
        self.env = {**os.environ, **self.base_env, "DESKGEN_TOPIC_PREFIX": self.prefix,
                    "DESKGEN_S3_BUCKET": self.bucket, "DESKGEN_KAFKA_GROUP_PREFIX": self.prefix,
                    "DESKGEN_HTTP_PORT": "0", "DESKGEN_STATE_DIR": str(self.workdir / "state"),
                    "PYTHONUNBUFFERED": "1"}
        os.environ.update({k: self.env[k] for k in ("DESKGEN_TOPIC_PREFIX", "DESKGEN_S3_BUCKET")})
        self.settings = BackendSettings.load().with_names(topic_prefix=self.prefix, bucket=self.bucket)
        self.backend = Backend(self.settings, source="/pipeline")
        self.store = self.backend.store
        self.store.ensure_bucket()

    @property
    def bootstrap(self) -> str:
        return self.env["DESKGEN_KAFKA_BOOTSTRAP_SERVERS"]

    @property
    def kafka(self):
        """The pipeline's KafkaSettings (every client here is built from them through common/kafka.py)."""
        return self.backend.settings.kafka

    def topic(self, kind: str) -> str:
        return f"{self.prefix}{kind}"

    def create_topics(self, partitions: int = 1) -> None:
        subprocess.run([PYTHON, "-m", "deskgen.common.cli", "topics", "create", "--partitions", str(partitions)],
                       env=self.env, check=True, capture_output=True, timeout=60)

    # -- processes -----------------------------------------------------------------------------

    # A script that serves small stages without models (``SCRIPT STAGE``), for ``start(real=False)``.
    stage_script = None

    def start(self, stage: str, *, instance: str = "0", real: bool = False, **extra_env: str) -> Service:
        """Start a stage process: the real service, or one of ``stage_script``'s."""
        if not real and self.stage_script is None:
            raise ValueError("this pipeline has no stage_script: start(stage, real=True)")
        command = [PYTHON, "-m", "deskgen.common.cli", "run", stage] if real else \
            [PYTHON, str(self.stage_script), stage]
        log_path = self.workdir / f"{stage}-{instance}-{len(self.services)}.log"
        env = {**self.env, "DESKGEN_INSTANCE_ID": instance, **{k: str(v) for k, v in extra_env.items()}}
        process = processes.spawn(command, log_path, cwd=ROOT, env=env)
        service = Service(f"{stage}-{instance}", process, log_path)
        self.services.append(service)
        return service

    def stop_all(self) -> None:
        for service in self.services:
            service.terminate(10)

    # -- the backend's side --------------------------------------------------------------------

    def submit(self, photo: bytes | None = None, *, ext: str | None = None, **request) -> str:
        """Upload a photo and publish its `uploaded` event through the backend client; returns the job id.
        ``ext``: the file name's extension, by default the photo's format (``jpg`` for a file that is none)."""
        photo = photo if photo is not None else photo_bytes()
        ext = ext or sniff_format(photo) or "jpg"
        return self.backend.submit(photo, request=request, filename=f"photo.{ext}")

    def upload(self, photo: bytes, job_id: str, *, ext: str = "jpg") -> str:
        """Store a job's photo under its upload key, as the backend does before publishing; returns the key."""
        key = upload_key(job_id, ext)
        self.store.put(key, photo, upload_content_type(photo, f"photo.{ext}"))
        return key

    def publish(self, kind: str, data: dict) -> None:
        self.backend.publish(events.encode(kind, data, source="/pipeline"))

    def publisher(self) -> Backend:
        """A backend client of its own for many events (``publish(record, wait=False)``, then ``flush``):
        librdkafka stays quiet while the broker is away and keeps each event up to 10 minutes."""
        quiet = {"message.timeout.ms": SecretStr("600000"), "log_level": SecretStr("2")}
        kafka = self.kafka.model_copy(update={"extra": {**self.kafka.extra, **quiet}})
        return Backend(dataclasses.replace(self.settings, kafka=kafka), source="/pipeline")

    def produce_raw(self, kind: str, key: bytes | None, value: bytes | None, headers=None) -> None:
        """Publish bytes that need not be an event at all (hostile tests)."""
        producer = make_producer(self.kafka)
        producer.produce(self.topic(kind), key=key, value=value, headers=headers or [])
        if producer.flush(30) != 0:
            raise AssertionError("event not delivered")

    # -- reading what came out -----------------------------------------------------------------

    def read(self, kind: str, *, until=lambda records: False, timeout: float = 60.0, settle: float = 1.0) -> list[dict]:
        """Every committed record on a topic, from the beginning, until ``until(records)`` holds (then
        ``settle`` more seconds, so late duplicates show up) or ``timeout``."""
        consumer = make_reader(self.kafka)
        topic = self.topic(kind)
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        records: list[dict] = []
        deadline = time.monotonic() + timeout
        settle_until = None
        try:
            while time.monotonic() < (settle_until or deadline):
                message = consumer.poll(0.2)
                if message is not None and not message.error():
                    records.append({"key": message.key(), "headers": dict(message.headers() or []),
                                    "data": json.loads(message.value())})
                if settle_until is None and until(records):
                    settle_until = time.monotonic() + settle
        finally:
            consumer.close()
        return records

    def results(self, jobs, timeout: float = 90.0, settle: float = 1.0) -> dict[str, list[dict]]:
        """Terminal results by job id (every job listed, even with none)."""
        wanted = set(jobs)
        records = self.read("generated", until=lambda rs: wanted <= {r["data"]["job_id"] for r in rs},
                            timeout=timeout, settle=settle)
        by_job: dict[str, list[dict]] = {job: [] for job in wanted}
        for record in records:
            by_job.setdefault(record["data"]["job_id"], []).append(record["data"])
        return by_job

    def dlq(self, count: int, timeout: float = 60.0) -> list[dict]:
        return [r["data"] for r in self.read("dlq", until=lambda rs: len(rs) >= count, timeout=timeout)]

    # -- what is left in flight ----------------------------------------------------------------

    def backlog(self, group: str, kind: str, timeout: float = 30.0) -> int:
        """Committed records on a topic that consumer group ``group`` has not consumed (committed) yet:
        its lag as a ``read_committed`` reader sees it (transaction markers are not counted)."""
        topic = self.topic(kind)
        admin = make_admin(self.kafka)
        partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])
        committed = admin.list_consumer_group_offsets([request])[group].result(timeout).topic_partitions
        reader = make_reader(self.kafka, **{"enable.partition.eof": True})
        reader.assign([TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                       for tp in committed])
        pending, count = {tp.partition for tp in committed}, 0
        deadline = time.monotonic() + timeout
        try:
            while pending and time.monotonic() < deadline:
                message = reader.poll(0.2)
                if message is None:
                    continue
                if not message.error():
                    count += 1
                elif message.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
        finally:
            reader.close()
        if pending:
            raise AssertionError(f"{topic}: partitions {sorted(pending)} not read to the end in {timeout:.0f} s")
        return count

    def open_transactions(self, kinds: tuple[str, ...] | None = None) -> list[str]:
        """Partitions whose last stable offset lags their high watermark: an open (undecided) transaction;
        ``kinds``: the topics to look at, by default every event kind of the topology."""
        kinds = kinds or topology.event_kinds()
        admin = make_admin(self.kafka)
        metadata = admin.list_topics(timeout=10).topics
        partitions = [TopicPartition(self.topic(kind), p) for kind in kinds for p in metadata[self.topic(kind)].partitions]

        def latest(isolation) -> dict[tuple[str, int], int]:
            futures = admin.list_offsets({tp: OffsetSpec.latest() for tp in partitions}, isolation_level=isolation)
            return {(tp.topic, tp.partition): future.result(30).offset for tp, future in futures.items()}

        stable, high = latest(IsolationLevel.READ_COMMITTED), latest(IsolationLevel.READ_UNCOMMITTED)
        return [f"{topic}[{partition}]: last stable offset {stable[topic, partition]} < high watermark {offset}"
                for (topic, partition), offset in sorted(high.items()) if stable[topic, partition] < offset]

    def describe_failure(self) -> str:
        return "\n".join(f"--- {s.name} ---\n{s.log()[-4000:]}" for s in self.services)


def dlq_payload(record: dict) -> bytes:
    return base64.b64decode(record["payload_b64"])

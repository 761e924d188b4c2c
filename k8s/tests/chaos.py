"""Faults on the cluster under a steady load, and the bookkeeping that proves what they did.

``Load`` submits photos from this machine through the backend client the whole time; ``Results`` reads
every terminal result (read_committed) as it arrives; ``Sampler`` records each stage's backlog and Ready
replicas. A ``Fault`` remembers when it struck, which pod, and — for a stage pod — the jobs it held:
the pod's ``deskgen_inflight_jobs`` gauge and the first uncommitted records of the partitions the
consumer group had assigned to it, read just before the kill.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, ConsumerGroupTopicPartitions, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from deskgen.common import topology
from deskgen.common.kafka import make_admin, make_reader

HTTP_PORT = 8080  # the chart's http.port: /metrics
HELD_PER_PARTITION = 4  # the first uncommitted records per assigned partition that count as held


def epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


@dataclasses.dataclass
class Fault:
    kind: str  # e.g. "SIGKILL in place", "force delete", "broker SIGKILL"
    target: str  # a stage name, "kafka", "s3proxy", "keda" (a burst KEDA scales the captioner on) or a drained node
    pod: str
    at: float  # epoch seconds, just before the signal
    inflight: float | None = None  # the pod's gauge read just before the kill
    held: list[dict] = dataclasses.field(default_factory=list)  # {"job", "partition", "offset", "queued_at"}
    evidence: str = ""  # infrastructure faults: what was open at the kill


class Load(threading.Thread):
    """Submits ``photos`` in turn, one every ``interval`` seconds, until stopped; ``burst`` adds more at once.
    A photo S3 refuses (its server killed) is counted as refused: nothing was published for it."""

    def __init__(self, pipeline, photos: list[tuple[str, bytes]], interval: float):
        super().__init__(daemon=True, name="load")
        self.backend = pipeline.publisher()  # keeps events up to 10 minutes while the broker is away
        self.photos, self.interval = photos, interval
        self.submitted: dict[str, float] = {}  # job id -> epoch when the backend took it
        self.refused: list[str] = []
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._turn = 0

    def submit(self, count: int = 1, photo: tuple[str, bytes] | None = None) -> list[str]:
        """``count`` photos: ``photo`` (name, bytes) each time, else the load's photos in turn."""
        jobs = []
        with self._lock:
            for _ in range(count):
                name, data = photo or self.photos[self._turn % len(self.photos)]
                self._turn += 1
                try:
                    job = self.backend.submit(data, filename=name, wait=False)
                except Exception as exc:  # S3 away: nothing published for this photo
                    self.refused.append(f"{type(exc).__name__}: {exc}"[:200])
                    continue
                self.submitted[job] = time.time()
                jobs.append(job)
        return jobs

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.submit()

    def stop(self) -> None:
        """Stops submitting and waits until the broker has every submitted event."""
        self._stop_event.set()
        self.join(30)
        self.backend.flush(600)


class Results(threading.Thread):
    """Every terminal result on ``generated`` (read_committed), with the epoch it was read."""

    def __init__(self, pipeline):
        super().__init__(daemon=True, name="results")
        self.pipeline = pipeline
        self.records: list[tuple[float, dict]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        reader = make_reader(self.pipeline.kafka)
        topic = self.pipeline.topic("generated")
        partitions = reader.list_topics(topic, timeout=30).topics[topic].partitions
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        try:
            while not self._stop_event.is_set():
                message = reader.poll(0.5)
                if message is not None and not message.error():
                    self.records.append((time.time(), json.loads(message.value())))
        finally:
            reader.close()

    def last_arrival(self) -> float:
        return self.records[-1][0] if self.records else 0.0

    def by_job(self) -> dict[str, list[dict]]:
        jobs: dict[str, list[dict]] = {}
        for _, data in self.records:
            jobs.setdefault(data["job_id"], []).append(data)
        return jobs

    def stop(self) -> None:
        self._stop_event.set()
        self.join(30)


class Sampler(threading.Thread):
    """Every ``interval`` s: each stage's backlog (None while the broker is away) and Ready replicas."""

    def __init__(self, pipeline, ready_replicas, interval: float = 3.0):
        super().__init__(daemon=True, name="sampler")
        self.pipeline, self.ready_replicas, self.interval = pipeline, ready_replicas, interval
        self.samples: list[dict] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            sample: dict = {"at": time.time(), "backlog": {}, "ready": {}}
            for stage in topology.STAGES.values():
                try:
                    sample["backlog"][stage.name] = self.pipeline.backlog(f"deskgen-{stage.name}", stage.consumes,
                                                                          timeout=5)
                except Exception:  # the broker is down or restarting
                    sample["backlog"][stage.name] = None
            try:
                sample["ready"] = self.ready_replicas()
            except Exception:  # the API server did not answer in time
                pass
            self.samples.append(sample)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(60)


def pod_metric(pod: dict, name: str, **labels: str) -> float | None:
    """The first sample of metric ``name`` with ``labels`` on the pod's /metrics (None when the pod does
    not answer or has no such sample)."""
    url = f"http://{pod['status']['podIP']}:{HTTP_PORT}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    for line in text.splitlines():
        if line.startswith(name + "{") and all(label in line for label in wanted):
            return float(line.rsplit(" ", 1)[1])
    return None


def inflight(pod: dict, stage: str) -> float | None:
    """The pod's ``deskgen_inflight_jobs`` gauge (None when the pod does not answer)."""
    return pod_metric(pod, "deskgen_inflight_jobs", stage=stage)


_admins: dict[int, AdminClient] = {}


def _admin(pipeline) -> AdminClient:
    """One admin client per pipeline for the kill loop (it asks several times a second)."""
    return _admins.setdefault(id(pipeline), make_admin(pipeline.kafka))


def held_jobs(pipeline, stage_name: str, pod_ip: str) -> list[dict]:
    """The first uncommitted records of the partitions the stage's group assigned to the pod at ``pod_ip``."""
    stage = topology.STAGES[stage_name]
    group, topic = f"deskgen-{stage_name}", pipeline.topic(stage.consumes)
    admin = _admin(pipeline)
    members = admin.describe_consumer_groups([group])[group].result(10).members
    # The broker sees the member's address; where the CNI masquerades pod traffic to a service (the
    # local cluster's bridge does), every member has the bridge's, and only a group of one member
    # (one replica, no dead member waiting out its session) tells which pod holds the partitions.
    mine = [m for m in members if m.host.lstrip("/") == pod_ip] or (members if len(members) == 1 else [])
    partitions = [tp.partition for member in mine for tp in member.assignment.topic_partitions if tp.topic == topic]
    if not partitions:
        return []
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])
    committed = admin.list_consumer_group_offsets([request])[group].result(10).topic_partitions
    reader = make_reader(pipeline.kafka, **{"enable.partition.eof": True})
    reader.assign([TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                   for tp in committed])
    held: list[dict] = []
    pending = {tp.partition: HELD_PER_PARTITION for tp in committed}
    deadline = time.monotonic() + 10
    try:
        while pending and time.monotonic() < deadline:
            message = reader.poll(0.2)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    pending.pop(message.partition(), None)
                continue
            if pending.get(message.partition(), 0) <= 0:
                continue
            pending[message.partition()] -= 1
            held.append({"job": json.loads(message.value())["job_id"], "partition": message.partition(),
                         "offset": message.offset(), "queued_at": message.timestamp()[1] / 1000})
            if pending[message.partition()] == 0:
                pending.pop(message.partition())
    finally:
        reader.close()
    return held


def interrupted(fault: Fault, results: dict[str, list[dict]]) -> list[str]:
    """Held jobs the kill interrupted: queued for the stage before the kill, and the stage's committed
    run of them (its timeline entry) began after it — on the restarted pod or another one."""
    jobs = []
    for held in fault.held:
        for result in results.get(held["job"], []):
            entry = result.get("timeline", {}).get(fault.target)
            if held["queued_at"] < fault.at and entry and epoch(entry["received"]) > fault.at:
                jobs.append(held["job"])
    return jobs


def in_flight_at(at: float, submitted: dict[str, float], arrivals: dict[str, float]) -> int:
    """Jobs submitted before ``at`` whose first terminal result arrived after it."""
    return sum(1 for job, when in submitted.items() if when < at and arrivals.get(job, float("inf")) > at)


def plot(path: Path, samples: list[dict], results: list[tuple[float, dict]], faults: list[Fault], start: float) -> None:
    """Backlog and Ready replicas per stage, and terminal results, over time, each fault marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(topology.STAGES)
    figure, (lag_axis, replica_axis, result_axis) = plt.subplots(3, 1, sharex=True, figsize=(11, 8))
    for stage in stages:
        points = [(s["at"] - start, s["backlog"].get(stage)) for s in samples]
        lag_axis.plot([t for t, _ in points], [v if v is not None else float("nan") for _, v in points], label=stage)
        replica_axis.step([s["at"] - start for s in samples], [s["ready"].get(stage, 0) for s in samples],
                          where="post", label=stage)
    arrivals = sorted(at - start for at, _ in results)
    result_axis.plot(arrivals, range(1, len(arrivals) + 1), color="black", label="terminal results (cumulative)")
    colors = {"SIGKILL in place": "tab:red", "force delete": "tab:orange", "KEDA burst": "tab:green",
              "drain": "tab:brown"}
    for axis in (lag_axis, replica_axis, result_axis):
        for fault in faults:
            axis.axvline(fault.at - start, color=colors.get(fault.kind, "tab:purple"), alpha=0.5, linewidth=1)
    for fault in faults:
        if fault.target in ("kafka", "s3proxy", "keda") or fault.kind == "drain":
            lag_axis.annotate(fault.kind if fault.kind == "drain" else fault.target, (fault.at - start, 0), rotation=90, fontsize=8, va="bottom")
    lag_axis.set_ylabel("backlog (records)")
    replica_axis.set_ylabel("Ready replicas")
    result_axis.set_ylabel("terminal results")
    result_axis.set_xlabel("seconds since the load started\n(red: SIGKILL in place, orange: force delete, "
                           "purple: broker / S3 / rollout, brown: node drain, green: a burst KEDA scales on)")
    for axis in (lag_axis, replica_axis, result_axis):
        axis.legend(loc="upper left", fontsize=8)
        axis.grid(alpha=0.3)
    lag_axis.set_title("deskgen on the local cluster: faults and a KEDA burst under load (dev-random weights)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)

"""Runtime overhead of one pass-through hop on loopback (real Kafka, transactions, read_committed).

Latency: jobs sent one at a time; hop = the `uploaded` event's produce time → the `classified`
event visible to a read_committed reader. Throughput: a burst of jobs, time until every output is
visible. Configurations: 1 and 3 partitions × 1 and 3 consumer processes.

    python tests/bench/bench_spine.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

from confluent_kafka import Consumer, Producer

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "stack"), str(ROOT / "tests")]

import localstack  # noqa: E402

from deskgen.common import events  # noqa: E402

PASSTHROUGH = '''
from deskgen.common.service import serve
from deskgen.common.stage import Emit, Stage

class PassThrough(Stage):
    name, consumes, produces, section = "classifier", "uploaded", "classified", "classification"
    batch_max = 64
    def load(self): pass
    def handle(self, event, blobs):
        return Emit({"label": "desk", "score": 1.0, "threshold": 0.5, "inference_ms": 0.0,
                     "model": {"name": "pass-through", "version": "0"}})

raise SystemExit(serve(PassThrough()))
'''


def _env(prefix: str) -> dict[str, str]:
    return {**os.environ, **localstack.deskgen_env(), "DESKGEN_TOPIC_PREFIX": prefix, "DESKGEN_HTTP_PORT": "0",
            "DESKGEN_LOG_LEVEL": "WARNING"}


def _job() -> tuple[str, events.Record]:
    job_id = uuid.uuid4().hex
    data = {"job_id": job_id, "image_key": f"uploads/{job_id}/original.jpg", "uploaded_at": events.now(),
            "request": {}, "timeline": {}}
    return job_id, events.encode("uploaded", data, source="/bench")


def run_config(partitions: int, consumers: int, latency_jobs: int, burst_jobs: int) -> dict:
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    env = _env(prefix)
    subprocess.run([sys.executable, "-m", "deskgen.common.cli", "topics", "create", "--partitions", str(partitions)],
                   env=env, check=True, capture_output=True)
    logs = Path(tempfile.mkdtemp(prefix="bench-spine-"))
    processes = [subprocess.Popen([sys.executable, "-c", PASSTHROUGH], env={**env, "DESKGEN_INSTANCE_ID": str(i)},
                                  stdout=(logs / f"{i}.log").open("w"), stderr=subprocess.STDOUT)
                 for i in range(consumers)]
    producer = Producer({"bootstrap.servers": env["DESKGEN_KAFKA_BOOTSTRAP_SERVERS"], "linger.ms": 0})
    reader = Consumer({"bootstrap.servers": env["DESKGEN_KAFKA_BOOTSTRAP_SERVERS"], "group.id": prefix + "reader",
                       "isolation.level": "read_committed", "auto.offset.reset": "latest", "fetch.wait.max.ms": 10})
    reader.subscribe([prefix + "classified"])
    try:
        _warm_up(producer, reader, prefix, consumers)
        hops = []
        for _ in range(latency_jobs):
            job_id, record = _job()
            sent = time.perf_counter()
            producer.produce(prefix + "uploaded", key=record.key, value=record.value, headers=record.headers)
            producer.flush()
            _await(reader, {job_id}, 30)
            hops.append((time.perf_counter() - sent) * 1000)
        burst = [_job() for _ in range(burst_jobs)]
        started = time.perf_counter()
        for _, record in burst:
            producer.produce(prefix + "uploaded", key=record.key, value=record.value, headers=record.headers)
        producer.flush()
        _await(reader, {job for job, _ in burst}, 300)
        elapsed = time.perf_counter() - started
    finally:
        reader.close()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
    hops.sort()
    return {"partitions": partitions, "consumers": consumers, "p50": statistics.median(hops),
            "p99": hops[min(len(hops) - 1, int(len(hops) * 0.99))], "jobs_per_s": burst_jobs / elapsed}


def _warm_up(producer, reader, prefix: str, consumers: int) -> None:
    """Wait until every consumer has joined and a job flows."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        jobs = []
        for _ in range(consumers * 4):
            job_id, record = _job()
            producer.produce(prefix + "uploaded", key=record.key, value=record.value, headers=record.headers)
            jobs.append(job_id)
        producer.flush()
        if _await(reader, set(jobs), 20, strict=False):
            return
    raise SystemExit("pass-through consumers never produced output")


def _await(reader, wanted: set[str], timeout: float, strict: bool = True) -> bool:
    wanted = set(wanted)
    deadline = time.monotonic() + timeout
    while wanted and time.monotonic() < deadline:
        message = reader.poll(0.05)
        if message is not None and not message.error():
            wanted.discard(message.key().decode())
    if wanted and strict:
        raise SystemExit(f"{len(wanted)} jobs never came out")
    return not wanted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    localstack.up()
    latency_jobs, burst_jobs = (30, 200) if args.quick else (200, 2000)
    rows = [run_config(p, c, latency_jobs, burst_jobs) for p, c in ((1, 1), (3, 1), (3, 3))]
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"\n### Spine: pass-through hop on loopback ({date.today()}, {cpu}, {os.cpu_count()} cores; "
          f"{latency_jobs} sequential jobs for latency, a burst of {burst_jobs} for throughput)\n")
    print("| partitions | consumer processes | hop p50 ms | hop p99 ms | jobs/s | jobs/s vs 1 consumer |")
    print("|---:|---:|---:|---:|---:|---:|")
    base = rows[0]["jobs_per_s"]
    for row in rows:
        print(f"| {row['partitions']} | {row['consumers']} | {row['p50']:.1f} | {row['p99']:.1f} | "
              f"{row['jobs_per_s']:.0f} | {row['jobs_per_s'] / base:.2f}× |")


if __name__ == "__main__":
    main()

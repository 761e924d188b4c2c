#!/usr/bin/env python3
"""The chaos run (``make chaos``): the real service of every stage in the topology (``common/topology.py``)
as processes on the local stack, faults injected while jobs flow, then the delivery guarantee checked from
the outside.

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
The parts: ``chaos_plan`` (options, jobs), ``chaos_fleet`` (the stage processes), ``chaos_load`` (faults,
catalogue churn, result watcher), ``chaos_checks`` (the verdict and the figures).

Stopping Kafka and S3 affects everyone on the shared local stack; both are restarted in a ``finally``.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "stack"))

import localstack  # noqa: E402
from chaos_checks import PhaseFigures, Report, verify  # noqa: E402
from chaos_fleet import Fleet, Supervisor  # noqa: E402
from chaos_load import CatalogueChurn, Faults, ResultWatcher  # noqa: E402
from chaos_plan import PARTITIONS, Job, Options, make_jobs, sample_photos, service_env  # noqa: E402
from devenv import dev_model_env  # noqa: E402
from pipeline import Pipeline  # noqa: E402

from deskgen.common import events  # noqa: E402

__all__ = ["Options", "Report", "run", "main"]


def _say(message: str) -> None:
    print(f"[chaos] {message}", flush=True)


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
    say(f"starting {len(fleet.slots)} stage processes (topics {pipeline.prefix}*, logs in {pipeline.workdir})")
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

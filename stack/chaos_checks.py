"""What a chaos run found: the delivery guarantee checked from a fresh ``read_committed`` reader and from S3
(``verify``), the figures of each phase and the markdown table of the whole run (``Report``)."""

from __future__ import annotations

import io
import math
import os
import platform
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from PIL import Image

from chaos_fleet import slots, stages
from chaos_plan import PARTITIONS, Job, Options
from deskgen.common import topology
from pipeline import Pipeline

__all__ = ["PhaseFigures", "Report", "Verdict", "backlogs", "verify"]


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
    verdict.backlog = backlogs(pipeline)
    verdict.open_transactions = pipeline.open_transactions()
    return verdict


def backlogs(pipeline: Pipeline) -> dict[str, int]:
    """Per stage of the topology: committed records on its input that its consumer group has left."""
    return {stage.name: pipeline.backlog(f"{pipeline.prefix}{stage.name}", stage.consumes) for stage in stages()}


def _image_problem(pipeline: Pipeline, key: str) -> str | None:
    try:
        with Image.open(io.BytesIO(pipeline.store.get(key))) as image:
            image.load()
            return None if image.format == "PNG" else f"{key}: {image.format}, not PNG"
    except Exception as exc:  # missing object or broken image: both are findings
        return f"{key}: {type(exc).__name__}: {exc}"[:300]


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
        backlog = ", ".join(f"{stage} on {topology.spec(stage).consumes}: {n}" for stage, n in v.backlog.items())
        lines += ["", f"After the run: committed backlog per stage group ({backlog}); partitions with an open "
                      f"transaction: {len(v.open_transactions)}; DLQ records ≠ 1 per corrupt file: "
                      f"{len(v.dlq_mismatches)}; results for unknown jobs: {len(v.strangers)}.",
                  f"Layout: {', '.join(f'{stage.name} ×{slots(stage.name)}' for stage in stages())} processes, {PARTITIONS} "
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

"""The count after the faults and the KEDA burst: every job submitted under the load has exactly one
terminal result once the backlog drained, every hard kill interrupted a job it held, and the plot."""

from __future__ import annotations

import time

from deskgen.common import topology

from chaos import in_flight_at, interrupted, plot
from conftest import FAULTS, ROOT, STAGES, record, wait_until

SETTLE_S = 30  # no terminal result for this long (and backlog 0) before counting
FAULT_PLOT = ROOT / ".cache" / "k8s" / "faults.png"


def test_no_job_lost_or_duplicated_once_the_backlog_drains(chaos, pipeline):
    """Counted only after the load stopped, every stage's backlog is 0 and no result came for SETTLE_S."""
    started = time.monotonic()
    load, results = chaos["load"], chaos["results"]
    load.stop()

    def drained():
        if time.time() - results.last_arrival() < SETTLE_S:
            return None
        return _backlog_zero(pipeline)

    wait_until(f"backlog 0 on every stage and no result for {SETTLE_S} s", drained, 1800, interval=5)
    chaos["sampler"].stop()
    results.stop()
    by_job = results.by_job()
    chaos["by_job"] = by_job
    submitted = load.submitted
    lost = [job for job in submitted if not by_job.get(job)]
    duplicated = {job: len(by_job[job]) for job in submitted if len(by_job.get(job, [])) > 1}
    arrivals = {}
    for at, data in results.records:
        arrivals.setdefault(data["job_id"], at)
    statuses: dict[str, int] = {}
    for job in submitted:
        for result in by_job.get(job, []):
            statuses[result["status"]] = statuses.get(result["status"], 0) + 1
    lines = [f"{len(submitted)} jobs submitted during the faults ({len(load.refused)} refused while S3 was away), "
             f"results {statuses}: lost {len(lost)}, duplicates {len(duplicated)} "
             f"(counted after backlog 0 and {SETTLE_S} s without a result)"]
    for fault in chaos["faults"]:
        lines.append(f"{fault.at - chaos['start']:7.1f} s  {fault.kind:<17} {fault.target:<10} {fault.pod:<40} "
                     f"in flight {in_flight_at(fault.at, submitted, arrivals):>3}"
                     + (f", pod gauge {fault.inflight:.0f}, held {len(fault.held)}" if fault.held else "")
                     + (f", {fault.evidence}" if fault.evidence else ""))
    FAULTS.write_text("\n".join(lines) + "\n")
    record(f"count once the backlog drained: {len(submitted)} jobs, lost {len(lost)}, duplicates {len(duplicated)}",
           time.monotonic() - started)
    assert not lost, lost[:10]
    assert not duplicated, duplicated
    assert len(submitted) >= 100


def test_every_hard_kill_interrupted_a_job_it_held(chaos):
    """From the jobs' timelines: a killed pod held a job queued before the kill whose committed run of that
    stage began after it (on the restarted pod or another) — for at least 10 kills, on every stage."""
    by_job = chaos.get("by_job")
    assert by_job is not None, "the counting test did not run"
    kills = [f for f in chaos["faults"] if f.target in STAGES]
    proven = {id(f): interrupted(f, by_job) for f in kills}
    with FAULTS.open("a") as report:
        for fault in kills:
            report.write(f"{fault.kind} {fault.target} {fault.pod}: interrupted {len(proven[id(fault)])} "
                         f"held job(s), e.g. {proven[id(fault)][:2]}\n")
    # A job can finish in the instant between seeing it held and the kill: the issue asks for ≥ 10 proven kills,
    # from every stage, so 12 are aimed and the unproven ones are named in the report.
    proven_kills = [f for f in kills if proven[id(f)]]
    unproven = [(f.kind, f.target, f.pod) for f in kills if not proven[id(f)]]
    assert len(proven_kills) >= 10 and {f.target for f in proven_kills} == set(STAGES), unproven


def test_fault_plot_is_written(chaos):
    submitted = chaos["load"].submitted
    results = [(at, data) for at, data in chaos["results"].records if data["job_id"] in submitted]
    plot(FAULT_PLOT, chaos["sampler"].samples, results, chaos["faults"], chaos["start"])
    assert FAULT_PLOT.stat().st_size > 10_000


def _backlog_zero(pipeline):
    total = sum(pipeline.backlog(f"deskgen-{stage.name}", stage.consumes) for stage in topology.STAGES.values())
    return (True, total) if total == 0 else None



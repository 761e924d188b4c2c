"""Metrics observed by the runtime: the series that exist from start-up, per job, consumer lag from
librdkafka's statistics, GPU memory."""

from __future__ import annotations

import logging
import time
from datetime import datetime

from . import metrics
from .errors import InvalidInputError
from .records import RUNTIME_REASONS, Item
from .stage import Reject, Stage

__all__ = ["start_series", "observe_job", "observe_lag", "brokers_up", "forget_lag", "observe_gpu_memory"]

log = logging.getLogger("deskgen.runtime")


def start_series(stage: Stage) -> None:
    """Create, zero-valued, every label set of ``stage`` that the dashboard and the alerts select.

    A series that first appears with its first event has no earlier sample, so a rate over it misses that
    event and a panel over it has no data until a later scrape; these exist before the first job instead.
    Label sets that depend on the job (a stage's own reasons) or on assignment (partitions) appear later.
    """
    name = stage.name
    for outcome in ("ok", "rejected", "failed"):
        metrics.EVENTS.labels(name, outcome)
        metrics.STAGE_DURATION.labels(name, outcome)
    for status in ("succeeded", "rejected", "failed") if stage.produces == "generated" else ("rejected", "failed"):
        metrics.JOB_E2E.labels(name, status)
    if stage.produces == "generated":
        metrics.RESULTS.labels(name, "succeeded", "")
    for reason in RUNTIME_REASONS:  # each ends the job as failed
        metrics.DLQ.labels(name, reason)
        metrics.RESULTS.labels(name, "failed", reason)
    for result in ("committed", "aborted"):
        metrics.TRANSACTIONS.labels(name, result)
    for histogram in (metrics.INFERENCE, metrics.BATCH_SIZE):
        histogram.labels(name)
    for gauge in (metrics.INFLIGHT, metrics.READY, metrics.MODEL_LOAD):
        gauge.labels(name).set(0)


def observe_job(stage_name: str, item: Item, elapsed: float) -> None:
    """Count a committed job by outcome, time it, and log one line."""
    outcome = item.outcome
    reason = outcome.reason if isinstance(outcome, (InvalidInputError, Reject)) else ""
    if isinstance(outcome, InvalidInputError):
        label = outcome.status
        metrics.DLQ.labels(stage_name, reason).inc()
    else:
        label = "rejected" if isinstance(outcome, Reject) else "ok"
    metrics.EVENTS.labels(stage_name, label).inc()
    metrics.STAGE_DURATION.labels(stage_name, label).observe(elapsed)
    if any(record.kind == "generated" for _, record in item.records):
        status = "succeeded" if label == "ok" else label
        metrics.RESULTS.labels(stage_name, status, reason).inc()
        uploaded_at = item.event.data.get("uploaded_at") if item.event else None
        if uploaded_at:
            age = time.time() - datetime.fromisoformat(uploaded_at.replace("Z", "+00:00")).timestamp()
            metrics.JOB_E2E.labels(stage_name, status).observe(max(age, 0.0))
    log.info("%s: job %s → %s%s (%.0f ms)", stage_name, item.job_id or "?", label, f" ({reason})" if reason else "",
             elapsed * 1000)


def observe_lag(stage_name: str, stats: dict) -> None:
    """Consumer lag per partition from a librdkafka statistics document (parsed).

    librdkafka's own consumer_lag needs committed offsets, which transactions never report to it,
    so lag = last stable offset - the position the application has consumed up to.
    """
    for topic, body in stats.get("topics", {}).items():
        for partition, p in body.get("partitions", {}).items():
            end = p.get("ls_offset", -1)
            position = next((o for o in (p.get("app_offset", -1001), p.get("committed_offset", -1001),
                                         p.get("lo_offset", -1)) if o >= 0), -1)
            if partition != "-1" and end >= 0 and position >= 0:
                metrics.CONSUMER_LAG.labels(stage_name, topic, partition).set(max(end - position, 0))


def brokers_up(stats: dict) -> bool:
    """Whether a librdkafka statistics document (parsed) shows a connection up to a real broker (not the
    bootstrap placeholder, node id -1)."""
    return any(b.get("state") == "UP" and b.get("nodeid", -1) >= 0 for b in stats.get("brokers", {}).values())


def forget_lag(stage_name: str, partitions: set[tuple[str, int]]) -> None:
    """Drop the lag series of partitions this instance no longer owns."""
    for topic, partition in partitions:
        try:
            metrics.CONSUMER_LAG.remove(stage_name, topic, str(partition))
        except KeyError:
            pass


def observe_gpu_memory(stage_name: str) -> None:
    """Set ``deskgen_gpu_memory_bytes`` (allocated, peak) from CUDA; without CUDA the series stays absent."""
    import sys

    torch = sys.modules.get("torch")  # a stage without torch has no GPU memory to report
    if torch is None or not torch.cuda.is_available():
        return
    metrics.GPU_MEMORY.labels(stage_name, "allocated").set(torch.cuda.memory_allocated())
    metrics.GPU_MEMORY.labels(stage_name, "peak").set(torch.cuda.max_memory_allocated())

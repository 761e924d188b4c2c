"""The three real services on the local stack, scraped by a real Prometheus: every panel of the
chart's Grafana dashboard returns data once jobs have gone through."""

from __future__ import annotations

import io
import math
import time

import pytest
from PIL import Image
from skimage import data as skimage_data

from chart.dashboard_queries import panel_queries
from samples import draw_desk

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.realweights]

from deskgen.common.topology import STAGES
# Long enough to hold both waves of jobs; a rate needs only two samples (1 s scrapes) in its window.
RATE_INTERVAL = "2m"
WAVES = 2  # a counter's first sample is its first value: the second wave makes every rate non-zero
READY_TIMEOUT_S = 240
RESULT_TIMEOUT_S = 180
PANEL_TIMEOUT_S = 60


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def _wait_for(server, expr: str, predicate, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        result = server.query(expr)
        if predicate(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def _has_data(result: list[dict]) -> bool:
    """A panel has data when some series has a finite value (a histogram quantile over no events is NaN)."""
    return any(math.isfinite(float(series["value"][1])) for series in result)


def _total(result: list[dict]) -> float:
    return sum(float(series["value"][1]) for series in result)


def test_every_dashboard_panel_returns_data_from_the_real_services(pipeline, dev_models, prometheus):
    pipeline.create_topics(partitions=1)
    env = {**dev_models, **{f"DESKGEN_{stage.upper()}_THREADS": "1" for stage in STAGES}}
    services = {stage: pipeline.start(stage, real=True, **env) for stage in STAGES}
    ports = {stage: service.http_port(timeout=READY_TIMEOUT_S) for stage, service in services.items()}
    server = prometheus({f"deskgen-{stage}": [f"127.0.0.1:{port}"] for stage, port in ports.items()})
    for stage, service in services.items():
        service.wait_ready(READY_TIMEOUT_S)

    desk_photos = [_png(draw_desk(seed=seed)) for seed in (1, 2)]
    coffee = _jpeg(skimage_data.coffee())
    corrupt = b"this is a text file with a .jpg name\n"
    expected: dict[str, tuple[str, str | None]] = {}
    for wave in range(WAVES):
        jobs = {pipeline.submit(photo, ext="png", preset="ott_3d"): ("succeeded", None) for photo in desk_photos}
        jobs[pipeline.submit(coffee)] = ("rejected", "not_desk")
        jobs[pipeline.submit(corrupt)] = ("rejected", "image_undecodable")
        expected.update(jobs)
        results = pipeline.results(expected, timeout=RESULT_TIMEOUT_S, settle=0.5)
        outcomes = {job: [(r["status"], r.get("reason")) for r in rs] for job, rs in results.items()}
        wrong = {job: got for job, got in outcomes.items() if got != [expected[job]]}
        assert not wrong, f"unexpected terminal results {wrong} (expected {expected})\n{pipeline.describe_failure()}"
        # Each wave's counts are scraped before the next wave starts, so the next one shows up as an increase.
        scraped = _wait_for(server, "sum(deskgen_results_total)", lambda r: _total(r) >= len(expected), 30)
        assert _total(scraped) >= len(expected), f"wave {wave + 1} not scraped: {scraped}\n{server.log()[-2000:]}"

    queries = panel_queries(rate_interval=RATE_INTERVAL, include_gpu=False)
    deadline = time.monotonic() + PANEL_TIMEOUT_S
    pending = queries
    while True:
        pending = [(title, expr) for title, expr in pending if not _has_data(server.query(expr))]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not pending, "dashboard panels with no data:\n" + "\n".join(
        f"- {title}: {expr} -> {server.query(expr)}" for title, expr in pending)

"""The three real services on the local stack, scraped by a real Prometheus: every panel of the
chart's Grafana dashboard returns data once jobs have gone through.

No step depends on scrape timing: every series a panel selects exists from start-up (zero-valued), and
jobs are submitted only once Prometheus holds a sample of each, so the jobs' increase falls inside every
rate's window; the test then polls until each panel has data."""

from __future__ import annotations

import io
import math
import re
import time

import pytest
from PIL import Image
from skimage import data as skimage_data

from chart.dashboard_queries import panel_queries
from samples import draw_desk

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.realweights]

from deskgen.common.topology import STAGES
# Long enough to hold the start-up samples and the jobs; a rate needs two samples (1 s scrapes) in its window.
RATE_INTERVAL = "2m"
READY_TIMEOUT_S = 240
SCRAPED_TIMEOUT_S = 60
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


def _selected_series(queries: list[tuple[str, str]]) -> set[str]:
    """The series the panels read, as instant selectors (a histogram's ``_bucket`` → its ``_count``)."""
    names = {name for _, expr in queries for name in re.findall(r"\b(deskgen_[a-z0-9_]+)", expr)}
    return {re.sub(r"_(bucket|sum)$", "_count", name) for name in names}


def test_every_dashboard_panel_returns_data_from_the_real_services(pipeline, dev_models, prometheus):
    pipeline.create_topics(partitions=1)
    env = {**dev_models, **{f"DESKGEN_{stage.upper()}_THREADS": "1" for stage in STAGES}}
    services = {stage: pipeline.start(stage, real=True, **env) for stage in STAGES}
    ports = {stage: service.http_port(timeout=READY_TIMEOUT_S) for stage, service in services.items()}
    server = prometheus({f"deskgen-{stage}": [f"127.0.0.1:{port}"] for stage, port in ports.items()})
    for stage, service in services.items():
        service.wait_ready(READY_TIMEOUT_S)
    queries = panel_queries(rate_interval=RATE_INTERVAL, include_gpu=False)
    for series in sorted(_selected_series(queries)):  # the zero samples the jobs' increase is measured from
        scraped = _wait_for(server, f"count({series})", bool, SCRAPED_TIMEOUT_S)
        assert scraped, f"{series}: not scraped before the first job\n{server.log()[-2000:]}"

    desk_photos = [_png(draw_desk(seed=seed)) for seed in (1, 2)]
    coffee = _jpeg(skimage_data.coffee())
    corrupt = b"this is a text file with a .jpg name\n"
    expected = {pipeline.submit(photo, ext="png", preset="ott_3d"): ("succeeded", None) for photo in desk_photos}
    expected[pipeline.submit(coffee)] = ("rejected", "not_desk")
    expected[pipeline.submit(corrupt)] = ("rejected", "image_undecodable")
    results = pipeline.results(expected, timeout=RESULT_TIMEOUT_S, settle=0.5)
    outcomes = {job: [(r["status"], r.get("reason")) for r in rs] for job, rs in results.items()}
    wrong = {job: got for job, got in outcomes.items() if got != [expected[job]]}
    assert not wrong, f"unexpected terminal results {wrong} (expected {expected})\n{pipeline.describe_failure()}"

    deadline = time.monotonic() + PANEL_TIMEOUT_S
    pending = queries
    while True:
        pending = [(title, expr) for title, expr in pending if not _has_data(server.query(expr))]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not pending, "dashboard panels with no data:\n" + "\n".join(
        f"- {title}: {expr} -> {server.query(expr)}" for title, expr in pending)

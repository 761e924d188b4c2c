"""The backend client (common/backend.py) and the CLI on top of it, against the real stack."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from deskgen.common.topology import STAGES

from support.pipeline import photo_bytes

pytestmark = pytest.mark.integration


def _cli(pipeline, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deskgen.common.cli", *args], env=pipeline.env, text=True,
                          capture_output=True, timeout=180)


def test_submit_and_results_through_the_client_and_the_cli(pipeline, tmp_path):
    pipeline.create_topics(partitions=1)
    for stage in STAGES:
        pipeline.start(stage)
    desk = tmp_path / "desk.png"
    desk.write_bytes(photo_bytes((30, 200, 40), fmt="PNG"))

    submitted = _cli(pipeline, "submit", str(desk), "--preset", "mix")
    assert submitted.returncode == 0, submitted.stderr
    [by_cli] = submitted.stdout.split()
    by_client = pipeline.backend.submit(photo_bytes((220, 30, 30)), job_id="client-job-1")  # sniffed: JPEG
    assert by_client == "client-job-1"
    assert pipeline.store.exists("uploads/client-job-1/original.jpg")

    results = pipeline.backend.results([by_cli, by_client], timeout_s=120)
    assert results[by_cli]["status"] == "succeeded" and results[by_cli]["output"]["preset"] == "mix"
    assert (results[by_client]["status"], results[by_client]["reason"]) == ("rejected", "not_desk")
    watched = _cli(pipeline, "watch", by_cli, by_client, "--json", "--timeout", "60")
    assert watched.returncode == 0, watched.stderr
    assert {json.loads(line)["job_id"] for line in watched.stdout.splitlines()} == {by_cli, by_client}


def test_a_photo_of_an_unknown_format_is_refused_before_anything_is_stored(pipeline):
    from deskgen.common.errors import InvalidInputError

    with pytest.raises(InvalidInputError) as refused:
        pipeline.backend.submit(b"GIF89a not allowed", job_id="gif-job")
    assert refused.value.reason == "image_format_not_allowed"
    assert not pipeline.store.exists("uploads/gif-job/original.gif")


def test_the_cli_sends_a_budget_and_product_categories_and_refuses_bad_ones(pipeline, tmp_path):
    pipeline.create_topics(partitions=1)
    desk = tmp_path / "desk.png"
    desk.write_bytes(photo_bytes((30, 200, 40), fmt="PNG"))

    sent = _cli(pipeline, "submit", str(desk), "--budget", "120", "EUR", "--include", "monitor, desk lamp",
                "--exclude", "chair")
    assert sent.returncode == 0, sent.stderr
    [job] = sent.stdout.split()
    [upload] = [r for r in pipeline.read("uploaded", until=lambda rs: any(r["key"].decode() == job for r in rs))
                if r["key"].decode() == job]
    assert upload["data"]["request"] == {"budget": {"amount": 120.0, "currency": "EUR"},
                                         "categories": {"include": ["monitor", "desk lamp"], "exclude": ["chair"]}}

    refused = _cli(pipeline, "submit", str(desk), "--budget", "120", "eur")
    assert refused.returncode == 2 and refused.stdout == ""
    assert "event_invalid" in refused.stderr and "request/budget/currency" in refused.stderr
    unknown = _cli(pipeline, "submit", str(desk), "--include", "sofa")
    assert unknown.returncode == 2 and "request/categories/include/0: 'sofa'" in unknown.stderr

"""The real captioner (tiny dev weights) captioning several waiting jobs in one batch, on the real stack.

Run as a script (``python tests/e2e/test_batching.py captioner``) this file serves the real captioner
stage behind a gate: each batch it is handed waits, without computing, until the file named by
``TEST_BATCH_GATE`` exists, so the test can kill the process while a batch is in hand.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from deskgen.common import events
from deskgen.common.service import main
from deskgen.services.captioner.settings import CaptionerSettings
from deskgen.services.captioner.stage import CaptionerStage, build_captioner

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_GATE = "TEST_BATCH_GATE"


class GatedCaptioner(CaptionerStage):
    """The captioner stage, waiting at ``TEST_BATCH_GATE`` before each batch and printing its size."""

    def handle_batch(self, events, blobs):
        print(f"holding a batch of {len(events)}", flush=True)
        gate = Path(os.environ[_GATE])
        while not gate.exists():
            time.sleep(0.1)
        return super().handle_batch(events, blobs)


def build_gated(settings: CaptionerSettings) -> GatedCaptioner:
    return GatedCaptioner(build_captioner(settings), batch_max=settings.batch_max)


def _publish(pipeline, job: str, color: tuple[int, int, int], *, photo: bool = True, **request) -> None:
    from support.pipeline import photo_bytes

    key = f"uploads/{job}/original.jpg"
    if photo:
        pipeline.store.put(key, photo_bytes(color, size=(120, 90)), "image/jpeg")
    pipeline.publish("classified", {
        "job_id": job, "image_key": key, "uploaded_at": events.now(), "request": request, "timeline": {},
        "classification": {"label": "desk", "score": 0.9, "threshold": 0.5, "inference_ms": 1.0,
                           "model": {"name": "published-by-test", "version": "1"}}})


def _outputs(pipeline, captioned: int, rejected: int, timeout: float) -> dict[str, list[tuple[str, dict]]]:
    """Every committed captioned event and terminal result, by job as (topic kind, data), once at least
    ``captioned`` and ``rejected`` of them are there (or ``timeout``)."""
    by_job: dict[str, list[tuple[str, dict]]] = {}
    for kind, count in (("captioned", captioned), ("generated", rejected)):
        for record in pipeline.read(kind, until=lambda rs, n=count: len(rs) >= n, timeout=timeout):
            by_job.setdefault(record["data"]["job_id"], []).append((kind, record["data"]))
    return by_job


def test_waiting_jobs_are_captioned_together_and_a_kill_mid_batch_loses_and_duplicates_nothing(
        pipeline, dev_models, tmp_path):
    pipeline.stage_script = Path(__file__)  # start() serves this file's gated captioner
    gate = tmp_path / "gate"
    env = {**dev_models, _GATE: str(gate), "DESKGEN_CAPTIONER_CATALOGUE": "false",
           "DESKGEN_CAPTIONER_BATCH_MAX": "4", "DESKGEN_BATCH_WAIT_MS": "3000"}
    pipeline.create_topics()
    first = {"a1", "a2", "a3", "a4"}
    for i, job in enumerate(sorted(first - {"a4"})):
        _publish(pipeline, job, (40 * i, 120, 200 - 40 * i))
    _publish(pipeline, "a4", (0, 0, 0), photo=False)  # its photo is missing

    captioner = pipeline.start("captioner", **env)
    captioner.wait_log("holding a batch of 4", timeout=240)
    gate.touch()
    outputs = _outputs(pipeline, captioned=3, rejected=1, timeout=180)

    for job in ("a1", "a2", "a3"):
        [(kind, data)] = outputs[job]
        assert kind == "captioned" and data["captioning"]["batch_size"] == 3, (job, outputs[job])
        assert data["captioning"]["weights"] == "dev-random"
    [(kind, result)] = outputs["a4"]
    assert (kind, result["status"], result["reason"], result["stage"]) == \
        ("generated", "failed", "object_missing", "captioner")

    gate.unlink()
    second = {"b1", "b2", "b3", "b4"}
    for i, job in enumerate(sorted(second - {"b4"})):
        _publish(pipeline, job, (200, 40 * i, 90))
    _publish(pipeline, "b4", (10, 200, 10), concept="NO_SUCH_CONCEPT")
    captioner.wait_log(r"holding a batch of 4[\s\S]*holding a batch of 4", timeout=120)
    captioner.kill()  # kill -9 with four jobs in hand
    leaked = set(_outputs(pipeline, captioned=4, rejected=2, timeout=5)) - first
    assert not leaked, f"outputs of a killed batch were committed: {leaked}"

    gate.touch()
    pipeline.start("captioner", **env)  # same instance id: fences the dead one, redoes its batch
    outputs = _outputs(pipeline, captioned=6, rejected=2, timeout=240)

    for job in ("a1", "a2", "a3", "b1", "b2", "b3"):
        assert [kind for kind, _ in outputs[job]] == ["captioned"], (job, outputs[job])
    for job, reason in (("a4", "object_missing"), ("b4", "unknown_concept")):
        assert [(kind, data["reason"]) for kind, data in outputs[job]] == [("generated", reason)], outputs[job]
    assert set(outputs) == first | second


if __name__ == "__main__":
    raise SystemExit(main(build_gated) if sys.argv[1:] == ["captioner"] else 2)

"""A new style end to end on the real stack: `deskgen train lora` on two drawn styles (the loss falls), the
adapter uploaded to S3 and published, a running generator loads it without a restart, a job with its preset
succeeds and differs from the base model's image, and once the adapter is deleted its preset is rejected."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deskgen.common import events
from deskgen.common.models import ModelSources
from deskgen.common.settings import S3Settings, load
from deskgen.services.generator.train_lora import LoraTraining, train_lora
from samples import draw_desk
from support.drawn_styles import draw_styles

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_OPTIONAL = ("DESKGEN_GENERATOR_LORA_", "DESKGEN_GENERATOR_FAST_LORA", "DESKGEN_GENERATOR_SAM")


def _captioned(pipeline, job: str, preset: str) -> None:
    key = f"uploads/{job}/original.png"
    buffer = io.BytesIO()
    draw_desk(seed=3, size=(320, 240)).save(buffer, "PNG")
    pipeline.store.put(key, buffer.getvalue(), "image/png")
    pipeline.publish("captioned", {
        "job_id": job, "image_key": key, "uploaded_at": events.now(), "request": {"preset": preset, "seed": 11},
        "timeline": {}, "captioning": {"captions": [], "keywords": [], "prompt": "stripes desk",
                                       "negative_prompt": "", "preset": "base", "concept": "BASIC",
                                       "model": {"name": "t", "version": "1"}}})


def _adapters(pipeline, env, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "deskgen.common.cli", "adapters", *args], capture_output=True,
                          text=True, env={**os.environ, **pipeline.env, **env}, timeout=300)
    assert done.returncode == 0, done.stderr


def _pixels(pipeline, result: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(pipeline.store.get(result["output"]["image_key"]))), dtype=np.int16)


def test_train_publish_hot_load_use_and_delete_a_style(pipeline, dev_models, tmp_path, monkeypatch):
    pipeline.create_topics()
    env = {name: value for name, value in dev_models.items() if not name.startswith(_OPTIONAL)}
    env["DESKGEN_GENERATOR_LOCATOR"] = "off"
    generator = pipeline.start("generator", real=True, **env)

    monkeypatch.setenv("DESKGEN_S3_BUCKET", pipeline.bucket)
    uri = f"s3://{pipeline.bucket}/adapters/stripes/1"
    trained = train_lora(LoraTraining(
        base=dev_models["DESKGEN_GENERATOR_MODEL"], data=str(draw_styles(tmp_path / "photos", count=24)),
        out=tmp_path / "stripes", name="stripes", rank=4, alpha=4, learning_rate=2e-3, steps=40, resolution=64,
        checkpoint_every=0, validation_steps=0, upload=uri), ModelSources(tmp_path / "cache", load(S3Settings)))
    assert sum(trained.losses[-10:]) < sum(trained.losses[:10])

    generator.wait_ready()
    _captioned(pipeline, "job-before", "base")
    [before] = pipeline.results(["job-before"], timeout=120)["job-before"]
    assert before["status"] == "succeeded", before

    _adapters(pipeline, env, "publish", "stripes", uri, "--weight", "1.0")
    _adapters(pipeline, env, "preset", "stripes_ott", "stripes=0.8", "ott=0.5")  # ott is not configured here
    generator.wait_log("styles: queued preset:stripes_ott")
    jobs = {"job-styled": "stripes", "job-base": "base", "job-partial": "stripes_ott"}
    for job, preset in jobs.items():
        _captioned(pipeline, job, preset)
    results = pipeline.results(list(jobs), timeout=120)
    [styled], [base], [partial] = (results[job] for job in jobs)
    assert styled["status"] == "succeeded", styled
    assert (styled["output"]["preset"], styled["output"]["adapters"]) == ("stripes", {"stripes": 1.0})
    assert np.array_equal(_pixels(pipeline, base), _pixels(pipeline, before)), "the base model is untouched"
    assert np.abs(_pixels(pipeline, styled) - _pixels(pipeline, base)).max() > 8, "the adapter changes the image"
    assert (partial["status"], partial["reason"]) == ("rejected", "preset_unavailable"), partial
    assert "generator: adapter stripes loaded from " + uri in generator.log()

    _adapters(pipeline, env, "preset", "stripes_mix", "stripes=0.6")
    _adapters(pipeline, env, "delete", "stripes")
    generator.wait_log("styles: deleted adapter:stripes")
    _captioned(pipeline, "job-after", "stripes_mix")
    [after] = pipeline.results(["job-after"], timeout=120)["job-after"]
    assert (after["status"], after["reason"]) == ("rejected", "preset_unavailable"), after
    assert generator.process.poll() is None, "no restart at any point"

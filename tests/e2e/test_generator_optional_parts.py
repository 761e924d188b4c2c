"""The generator's optional parts on the real stack: the service configured with the base model only (no LoRA,
fast LoRA, SAM or locator) starts and serves restyles with the `base` preset, and each job that needs a missing
part is rejected with its own reason; a configured part that cannot load stops start-up in one line."""

from __future__ import annotations

import io
import urllib.request

import pytest
from PIL import Image

from deskgen.common import events
from samples import draw_desk

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_OPTIONAL = ("DESKGEN_GENERATOR_LORA_", "DESKGEN_GENERATOR_FAST_LORA", "DESKGEN_GENERATOR_SAM")


def _base_only(dev_models: dict[str, str]) -> dict[str, str]:
    """The dev settings with every optional part left at its default (off), and the locator switched off."""
    return {**{name: value for name, value in dev_models.items() if not name.startswith(_OPTIONAL)},
            "DESKGEN_GENERATOR_LOCATOR": "off"}


def _captioned(pipeline, job: str, request: dict, preset: str = "basic") -> None:
    key = f"uploads/{job}/original.png"
    buffer = io.BytesIO()
    draw_desk(seed=2, size=(320, 240)).save(buffer, "PNG")
    pipeline.store.put(key, buffer.getvalue(), "image/png")
    pipeline.publish("captioned", {
        "job_id": job, "image_key": key, "uploaded_at": events.now(), "request": request, "timeline": {},
        "captioning": {"captions": [], "keywords": [], "prompt": "a clean desk", "negative_prompt": "blurry",
                       "preset": preset, "concept": preset.upper(), "model": {"name": "t", "version": "1"}}})


def test_a_base_only_generator_serves_restyles_and_rejects_what_it_cannot_do(pipeline, dev_models):
    pipeline.create_topics()
    generator = pipeline.start("generator", real=True, **_base_only(dev_models))
    generator.wait_ready()
    jobs = {"job-base": {}, "job-oil": {"preset": "oil"}, "job-fast": {"fast": True},
            "job-keep": {"mode": "keep_devices"}}
    for job, request in jobs.items():
        _captioned(pipeline, job, request)

    results = pipeline.results(list(jobs), timeout=180)

    [served] = results["job-base"]
    assert served["status"] == "succeeded", served
    output = served["output"]
    assert (output["preset"], output["adapters"], output["locator"]) == ("base", {}, "off")
    assert output["preset_fallback"] == {"requested": "basic", "used": "base", "chosen_by": "captioner",
                                         "missing_adapters": ["ott", "3d"]}
    image = Image.open(io.BytesIO(pipeline.store.get(output["image_key"])))
    assert image.format == "PNG" and image.size == (output["width"], output["height"])
    for job, reason in (("job-oil", "preset_unavailable"), ("job-fast", "fast_unavailable"),
                        ("job-keep", "keep_devices_unavailable")):
        [result] = results[job]
        assert (result["status"], result["reason"]) == ("rejected", reason), result

    assert "generator parts: presets available ['base']" in generator.log()
    with urllib.request.urlopen(f"http://127.0.0.1:{generator.http_port()}/metrics", timeout=10) as response:
        exported = response.read().decode()
    assert 'deskgen_generator_preset_available{preset="base",stage="generator"} 1.0' in exported
    assert 'deskgen_generator_preset_available{preset="oil",stage="generator"} 0.0' in exported
    assert 'component="locator",kind="off"' in exported


def test_a_configured_locator_that_cannot_load_stops_start_up_naming_its_setting(pipeline, dev_models):
    generator = pipeline.start("generator", real=True, **{**_base_only(dev_models), "DESKGEN_GENERATOR_LOCATOR": "owlv2",
                                                          "DESKGEN_GENERATOR_LOCATOR_MODEL": "file:///nowhere/owlv2"})
    assert generator.process.wait(180) == 2
    log = generator.log()
    assert "Traceback" not in log, log
    [line] = [line for line in log.splitlines() if " ERROR " in line or line.startswith("ERROR")]
    assert "DESKGEN_GENERATOR_LOCATOR=owlv2: cannot load" in line and "/nowhere/owlv2" in line

"""The three real services (real code paths; tiny dev weights where no real weights ship) on the real stack."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from deskgen.common import events
from deskgen.services.generator.geometry import fit
from samples import draw_desk
from support.pipeline import photo_bytes

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _classified(pipeline, job_id: str, **request) -> None:
    """Publish a `classified` event for a drawn desk photo, as the classifier would."""
    key = f"uploads/{job_id}/original.png"
    pipeline.store.put(key, _png(draw_desk(seed=3)), "image/png")
    pipeline.publish("classified", {
        "job_id": job_id, "image_key": key, "uploaded_at": events.now(), "request": request,
        "timeline": {"classifier": {"received": events.now(), "finished": events.now()}},
        "classification": {"label": "desk", "score": 0.3, "threshold": 0.15, "inference_ms": 9.0,
                           "model": {"name": "published-by-test", "version": "1"}}})


def test_classifier_lets_a_desk_through_and_rejects_a_coffee_cup(pipeline):
    from skimage import data

    pipeline.create_topics()
    pipeline.start("classifier", real=True)
    buffer = io.BytesIO()
    Image.fromarray(data.coffee()).save(buffer, "JPEG")
    desk = pipeline.submit(_png(draw_desk(seed=5)), ext="png")
    coffee = pipeline.submit(buffer.getvalue())

    results = pipeline.results([coffee], timeout=180)
    classified = pipeline.read("classified", until=lambda rs: any(r["data"]["job_id"] == desk for r in rs))

    assert [(r["status"], r["reason"]) for r in results[coffee]] == [("rejected", "not_desk")]
    assert results[coffee][0]["classification"]["evidence"][0]["label"] == "espresso"
    [desk_event] = [r["data"] for r in classified if r["data"]["job_id"] == desk]
    classification = desk_event["classification"]
    assert classification["label"] == "desk" and classification["score"] >= classification["threshold"]
    assert classification["model"]["name"].startswith("efficientnet_lite0")


def test_classifier_threshold_is_configurable(pipeline):
    pipeline.create_topics()
    pipeline.start("classifier", real=True, DESKGEN_CLASSIFIER_THRESHOLD="0.0")
    job = pipeline.submit(photo_bytes((220, 30, 30)))  # a plain red picture: no desk, but the bar is 0

    classified = pipeline.read("classified", until=lambda rs: any(r["data"]["job_id"] == job for r in rs))

    assert [r["data"]["classification"]["threshold"] for r in classified] == [0.0]


def test_captioner_turns_a_classified_photo_into_a_prompt(pipeline, dev_models):
    pipeline.create_topics()
    pipeline.start("captioner", real=True, **dev_models)
    _classified(pipeline, "job-caption", concept="OIL")

    captioned = pipeline.read("captioned", until=lambda rs: len(rs) >= 1, timeout=180)

    [event] = [r["data"] for r in captioned]
    captioning = event["captioning"]
    assert [c["prompt"] for c in captioning["captions"]] == [
        "This is a photo of", "Q: What objects are on the desk? A:", "desk_setup:"]
    assert (captioning["concept"], captioning["preset"], captioning["weights"]) == ("OIL", "oil", "dev-random")
    assert "painting" not in captioning["negative_prompt"] and captioning["prompt"]
    assert event["classification"]["model"]["name"] == "published-by-test"  # carried forward
    assert list(event["timeline"]) == ["classifier", "captioner"]


def test_generator_stores_a_png_of_the_requested_size_and_keeps_the_users_devices(pipeline, dev_models):
    pipeline.create_topics()
    pipeline.start("generator", real=True, **dev_models)
    photo = draw_desk(seed=0, size=(320, 240))
    pipeline.store.put("uploads/job-keep/original.png", _png(photo), "image/png")
    prompt = "a clean modern desk setup with a large monitor"
    for job, request in (("job-gen", {"width": 96, "height": 64, "preset": "dalle_ott"}),
                         ("job-bad-steps", {"steps": 500}),
                         ("job-keep", {"mode": "keep_devices", "fast": True, "width": 96, "height": 64})):
        pipeline.publish("captioned", {
            "job_id": job, "image_key": f"uploads/{job}/original.png", "uploaded_at": events.now(),
            "request": request, "timeline": {},
            "captioning": {"captions": [], "keywords": [], "prompt": prompt, "negative_prompt": "blurry",
                           "preset": "basic", "concept": "BASIC", "model": {"name": "t", "version": "1"}}})

    results = pipeline.results(["job-gen", "job-bad-steps", "job-keep"], timeout=180)

    [result] = results["job-gen"]
    assert result["status"] == "succeeded", result
    output = result["output"]
    assert output["image_key"] == "generated/job-gen/dalle_ott.png"
    assert output["adapters"] == {"dalle": 0.7, "ott": 0.5}
    assert (output["mode"], output["fast"]) == ("restyle", False)
    image = Image.open(io.BytesIO(pipeline.store.get(output["image_key"])))
    assert (image.format, image.size) == ("PNG", (96, 64))
    [bad] = results["job-bad-steps"]
    assert (bad["status"], bad["reason"]) == ("rejected", "options_out_of_bounds")
    assert "steps=500" in bad["detail"]
    [kept] = results["job-keep"]
    assert kept["status"] == "succeeded", kept
    output = kept["output"]
    assert (output["mode"], output["fast"], output["mask_key"]) == ("keep_devices", True, "generated/job-keep/keep-mask.png")
    assert "monitor" in [device["label"] for device in output["kept_devices"]]
    image = np.asarray(Image.open(io.BytesIO(pipeline.store.get(output["image_key"]))).convert("RGB"))
    keep = np.asarray(Image.open(io.BytesIO(pipeline.store.get(output["mask_key"])))) == 255
    original = np.asarray(fit(photo, (96, 64))[0])  # cropped to 3:2, centred, then scaled uniformly
    assert keep.any() and np.array_equal(image[keep], original[keep])
    assert output["crop"] == pytest.approx([0.0, 1 / 18, 1.0, 17 / 18], abs=1e-3)  # the 4:3 photo's middle 3:2

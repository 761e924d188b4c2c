"""Real desk photos (tests/data/desk-photos) through the real services on the real stack, tiny dev weights.

With no size asked for, the output takes the aspect bucket nearest the photo's; keep_devices crops the photo to
that aspect (never stretches it) and keeps its pixels exactly. A real photo saved as HEIC and as AVIF, the way
phones save them, goes through classifier, captioner and generator in both modes.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deskgen.common import events
from deskgen.common.imaging import ImageSettings, decode_image
from deskgen.services.generator.geometry import buckets, crop_pixels, fit, nearest_bucket
from support.hostile_images import encode

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PHOTOS = Path(__file__).resolve().parents[1] / "data" / "desk-photos"
DEV_RESOLUTION = 64  # the dev settings' 64×64 default: their buckets are SDXL's scaled to 64² pixels
PHONE_PHOTO = "laptop-white-desk-plant.jpg"  # the packaged detectors and the dev locator both find its laptop
# A fixed subset, one per kind of aspect (portrait, near-square, 4:3, 3:2, 2:1), so the run time does not grow with the
# folder; tests/unit/test_desk_photo_provenance.py checks every photo of it.
GEOMETRY_PHOTOS = ("mug-and-keyboard-closeup.jpg", "laptop-blue-room-chairs.jpg", "lab-desk-monitor-front.jpg",
                   PHONE_PHOTO, "office-desk-laptop.jpg", "tenkeyless-keyboard-desk.jpg")


def _captioned(pipeline, job: str, photo: bytes, request: dict) -> None:
    """Store ``photo`` as the job's upload and publish its `captioned` event, as the captioner would."""
    key = pipeline.upload(photo, job)
    pipeline.publish("captioned", {
        "job_id": job, "image_key": key, "uploaded_at": events.now(), "request": request, "timeline": {},
        "captioning": {"captions": [], "keywords": [], "prompt": "a tidy desk setup", "negative_prompt": "blurry",
                       "preset": "basic", "concept": "BASIC", "model": {"name": "t", "version": "1"}}})


def test_real_photos_take_their_nearest_bucket_cropped_never_stretched_with_kept_pixels_exact(pipeline, dev_models):
    pipeline.create_topics()
    pipeline.start("generator", real=True, **dev_models)
    photos = {f"job-real-{i}": PHOTOS / name for i, name in enumerate(GEOMETRY_PHOTOS)}
    for job, path in photos.items():
        _captioned(pipeline, job, path.read_bytes(), {"mode": "keep_devices"})

    results = pipeline.results(list(photos), timeout=300)

    kept_any = False
    for job, path in photos.items():
        [result] = results[job]
        assert result["status"] == "succeeded", (path.name, result)
        output = result["output"]
        photo = decode_image(path.read_bytes(), ImageSettings())
        size = (output["width"], output["height"])
        assert size == nearest_bucket(photo.size, buckets(DEV_RESOLUTION)), path.name
        image = Image.open(io.BytesIO(pipeline.store.get(output["image_key"]))).convert("RGB")
        assert image.size == size
        if output["mode"] != "keep_devices":  # the locator found no device on this photo: a restyle, same size
            assert output["fallback"] == "no_devices_found", (path.name, output)
            continue
        kept_any = True
        x0, y0, x1, y1 = crop_pixels(photo.size, tuple(output["crop"]))
        assert (x1 - x0) / (y1 - y0) == pytest.approx(size[0] / size[1], rel=0.01), path.name
        expected, crop = fit(photo, size)
        assert output["crop"] == pytest.approx(list(crop), abs=1e-5)
        keep = np.asarray(Image.open(io.BytesIO(pipeline.store.get(output["mask_key"])))) == 255
        assert keep.any() and np.array_equal(np.asarray(image)[keep], np.asarray(expected)[keep]), path.name
    assert kept_any, "no photo kept a device: the pixel check ran on none"


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_a_phone_photo_as_heic_or_avif_goes_through_every_stage_in_both_modes(pipeline, dev_models, fmt):
    pipeline.create_topics()
    # The bar is lowered so that the test is about the format, not about what the classifier thinks of the photo.
    pipeline.start("classifier", real=True, DESKGEN_CLASSIFIER_THRESHOLD="0.0")
    pipeline.start("captioner", real=True, **dev_models)
    pipeline.start("generator", real=True, **dev_models)
    photo = Image.open(PHOTOS / PHONE_PHOTO).convert("RGB")
    data = encode(photo, fmt, quality=90)
    ext = {"HEIF": "heic", "AVIF": "avif"}[fmt]
    jobs = {mode: pipeline.submit(data, ext=ext, mode=mode) for mode in ("restyle", "keep_devices")}

    results = pipeline.results(list(jobs.values()), timeout=300)

    bucket = nearest_bucket(photo.size, buckets(DEV_RESOLUTION))
    for mode, job in jobs.items():
        [result] = results[job]
        assert result["status"] == "succeeded", (fmt, mode, result)
        output = result["output"]
        assert (output["mode"], (output["width"], output["height"])) == (mode, bucket)
        image = Image.open(io.BytesIO(pipeline.store.get(output["image_key"])))
        assert (image.format, image.size) == ("PNG", bucket)
        if mode == "keep_devices":  # the captioner's detectors found the laptop; the generator did not look again
            assert output["detector"].startswith("captioner:") and "detect_ms" not in output["timings"], output

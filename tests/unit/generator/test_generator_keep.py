"""keep_devices: masks from device boxes, inpainting from the loaded components, the user's pixels kept exactly."""

import io

import numpy as np
import pytest
from PIL import Image

from deskgen.common.errors import FatalError
from deskgen.common.events import validate
from deskgen.services.generator.components import Placement
from deskgen.services.generator.devweights import FAST_LORA, INPAINT_UNET_DIR, SAM_DIR
from deskgen.services.generator.geometry import fit
from deskgen.services.generator.locate import CamDetector, Detection
from deskgen.services.generator.masks import DeviceMasker, box_mask, paste_back
from deskgen.services.generator.model import FastLora, GenerationOptions, GeneratorModel
from deskgen.services.generator.request import parse_request
from deskgen.services.generator.stage import Components, GeneratorStage, KeptDevices
from samples import draw_desk

CPU = Placement.pick("cpu")

BOXES = [(0.1, 0.15, 0.55, 0.6), (0.62, 0.55, 0.95, 0.9)]


def _photo(width=96, height=64, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _options(fast=False, **changes) -> GenerationOptions:
    values = dict(steps=2, guidance=0.0 if fast else 5.0, width=96, height=64,
                  scheduler="lcm" if fast else "default", seed=3, fast=fast, strength=0.9)
    return GenerationOptions(**{**values, **changes})


@pytest.fixture(scope="module")
def sam_masker(tiny_dir):
    masker = DeviceMasker(str(tiny_dir / SAM_DIR), grow=0.02, placement=CPU)
    masker.load()
    return masker


def _assert_kept_exactly(result: Image.Image, original: Image.Image, keep: Image.Image) -> None:
    kept = np.asarray(keep) == 255
    out, source = np.asarray(result), np.asarray(original)
    assert kept.any() and (~kept).any()
    assert np.array_equal(out[kept], source[kept]), "a pixel inside a kept region differs from the original"
    assert (out[~kept] != source[~kept]).any(), "nothing outside the kept regions was painted"


def test_the_inpainting_pipeline_shares_every_component_with_the_loaded_one(tiny_model):
    base, inpaint = tiny_model.pipe, tiny_model.inpaint_pipe
    for name in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"):
        assert getattr(inpaint, name) is getattr(base, name), name
    assert base.unet.dtype == tiny_model.placement.dtype and base.vae.dtype == tiny_model.placement.dtype


@pytest.mark.parametrize("fast", [False, True], ids=["standard", "fast"])
def test_every_pixel_inside_the_kept_regions_equals_the_resized_original(tiny_model, sam_masker, fast):
    original = _photo().resize((96, 64))
    keep = sam_masker.mask(original, BOXES)
    preset = tiny_model.presets.presets["ott_3d"]

    result = tiny_model.inpaint("a desk", "blurry", preset, _options(fast), original, keep, feather_px=6)

    assert result.image.size == (96, 64)
    _assert_kept_exactly(result.image, original, keep)


def test_a_dedicated_nine_channel_inpainting_unet_is_loaded_by_uri_and_keeps_the_pixels(tiny_dir, tiny_loras):
    model = GeneratorModel(str(tiny_dir), tiny_loras, placement=CPU, fast=FastLora(str(tiny_dir / FAST_LORA)),
                           inpaint_unet_uri=str(tiny_dir / INPAINT_UNET_DIR))
    model.load()
    assert model.inpaint_pipe.unet.config.in_channels == 9 and model.inpaint_pipe.unet is not model.pipe.unet
    assert model.inpaint_pipe.vae is model.pipe.vae
    original, keep = _photo(), box_mask((96, 64), BOXES, 0.0)
    preset = model.presets.presets["mix"]

    result = model.inpaint("a desk", "", preset, _options(fast=True), original, keep, feather_px=4)

    _assert_kept_exactly(result.image, original, keep)
    # Presets switch the dedicated UNet's adapters too.
    layers = [m for m in model.inpaint_pipe.unet.modules() if hasattr(m, "_active_adapter")]
    assert layers and all(layer._active_adapter == ["dalle", "ott", "3d", "fast"] for layer in layers)


def test_a_four_channel_unet_is_refused_as_the_inpainting_unet(tiny_dir, tiny_loras):
    model = GeneratorModel(str(tiny_dir), tiny_loras, placement=CPU, inpaint_unet_uri=str(tiny_dir))
    with pytest.raises(FatalError, match="9"):
        model.load()


def test_box_masks_grow_by_a_fraction_of_the_longer_side_and_stay_inside_the_image():
    mask = np.asarray(box_mask((100, 50), [(0.2, 0.2, 0.4, 0.6), (0.9, 0.0, 1.0, 1.0)], grow=0.05))
    ys, xs = np.nonzero(mask[:, :60])
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (15, 44, 5, 34)
    assert mask[:, 85:].all() and set(np.unique(mask)) == {0, 255}


def test_sam_segments_stay_inside_their_grown_boxes(sam_masker):
    image = _photo()
    refined, boxes_only = np.asarray(sam_masker.mask(image, BOXES)), np.asarray(box_mask(image.size, BOXES, 0.02))
    assert refined.any() and not (refined & ~boxes_only).any()


def test_paste_back_is_exact_inside_and_fades_only_outside():
    original, generated = Image.new("RGB", (64, 64), (200, 10, 10)), Image.new("RGB", (64, 64), (0, 0, 250))
    keep = box_mask((64, 64), [(0.25, 0.25, 0.75, 0.75)], 0.0)
    pasted = np.asarray(paste_back(original, generated, keep, feather_px=8))
    assert (pasted[16:48, 16:48] == (200, 10, 10)).all()
    assert 0 < pasted[32, 50, 0] < 200  # the soft edge just outside
    assert (pasted[0, 0] == (0, 0, 250)).all()  # far away: the generated pixels


@pytest.fixture(scope="module")
def cam():
    """The offline device detector: class-activation maps of the packaged EfficientNet-Lite0 ImageNet weights."""
    detector = CamDetector(placement=CPU)
    detector.load()
    return detector


def _components(model, detector=None):
    return Components(model, DeviceMasker("", grow=0.02, placement=CPU), detector)


@pytest.mark.realweights
def test_keep_devices_stores_the_image_and_its_mask_and_names_the_kept_devices(tiny_model, tiny_settings, cam,
                                                                               captioned, photo_blobs):
    stage = GeneratorStage(_components(tiny_model, cam), tiny_settings)
    photo = draw_desk(seed=0, size=(320, 240))

    outcome = stage.handle(captioned("job-keep", {"mode": "keep_devices", "width": 96, "height": 64, "fast": True}),
                           photo_blobs("job-keep", photo))

    image_blob, mask_blob = outcome.blobs
    assert (image_blob.key, mask_blob.key) == ("generated/job-keep/basic.png", "generated/job-keep/keep-mask.png")
    section = outcome.section
    assert (section["mode"], section["fast"], section["mask_key"], section["scheduler"]) == (
        "keep_devices", True, mask_blob.key, "lcm")
    assert "monitor" in [d["label"] for d in section["kept_devices"]] and section["detector"] == cam.name
    # Each component's time: the photo, the locator, the masker, SDXL's denoising and decoding, the PNG.
    assert set(section["timings"]) == {"photo_ms", "detect_ms", "mask_ms", "inference_ms", "denoise_ms", "decode_ms",
                                       "preset_switch_ms", "encode_ms"}
    assert section["locator"] == cam.name
    assert all(0 <= v <= 1 for d in section["kept_devices"] for v in d["box"])
    validate("generated", {"job_id": "job-keep", "status": "succeeded", "stage": "generator",
                           "finished_at": "2026-11-25T12:00:02Z", "timeline": {}, "output": section})
    keep = Image.open(io.BytesIO(mask_blob.data))
    result = Image.open(io.BytesIO(image_blob.data)).convert("RGB")
    # 4:3 photo, 3:2 output: cropped top and bottom, then scaled uniformly.
    assert section["crop"] == pytest.approx([0, 1 / 18, 1, 17 / 18], abs=1e-6)
    _assert_kept_exactly(result, fit(photo, (96, 64))[0], keep)


@pytest.mark.realweights
def test_keep_devices_without_devices_falls_back_to_restyle_and_says_why(tiny_model, tiny_settings, cam, captioned,
                                                                         photo_blobs):
    stage = GeneratorStage(_components(tiny_model, cam), tiny_settings)

    outcome = stage.handle(captioned("job-none", {"mode": "keep_devices"}), photo_blobs("job-none", _photo()))

    assert (outcome.section["mode"], outcome.section["fallback"]) == ("restyle", "no_devices_found")
    assert [blob.key for blob in outcome.blobs] == ["generated/job-none/basic.png"]
    assert "mask_key" not in outcome.section


def test_fast_changes_the_image_and_reports_its_scheduler(tiny_model, tiny_settings, captioned, photo_blobs):
    stage = GeneratorStage(_components(tiny_model), tiny_settings)
    plain = stage.handle(captioned("job-f", {}), photo_blobs("job-f", _photo()))
    fast = stage.handle(captioned("job-f", {"fast": True}), photo_blobs("job-f", _photo()))
    assert (fast.section["fast"], fast.section["steps"], fast.section["guidance"], fast.section["scheduler"]) == (
        True, 2, 0.0, "lcm")
    assert plain.section["mode"] == "restyle" and plain.section["fast"] is False
    assert fast.blobs[0].data != plain.blobs[0].data


@pytest.mark.realweights
def test_the_kept_devices_are_typed_and_sized_to_the_output(tiny_model, tiny_settings, cam, captioned):
    stage = GeneratorStage(_components(tiny_model, cam), tiny_settings)
    event = captioned("job-typed", {"mode": "keep_devices", "width": 96, "height": 64})
    request = parse_request(event.data, tiny_settings, tiny_model.presets, event.job_id)

    timings = {}
    kept, fallback = stage._kept_devices(draw_desk(seed=0, size=(320, 240)), request, timings)

    assert fallback is None and isinstance(kept, KeptDevices) and set(timings) == {"detect_ms", "mask_ms"}
    assert kept.photo.size == kept.mask.size == (96, 64) and kept.mask.mode == "L"
    assert kept.devices and all(isinstance(d, Detection) for d in kept.devices)
    assert {d.label for d in kept.devices} <= set(tiny_settings.keep_categories)
    assert (kept.detector, kept.masker) == (cam.name, "boxes")


# The captioner's detections on the event (the upright 320×240 photo): a monitor and a keyboard to keep, a plant not.
_CAPTIONER_SAW = [{"label": "monitor", "score": 0.9, "box": [0.3, 0.1, 0.7, 0.5], "model": "ssd-oidv4"},
                  {"label": "keyboard", "score": 0.6, "box": [0.35, 0.6, 0.65, 0.7], "model": "centernet-coco"},
                  {"label": "plant", "score": 0.8, "box": [0.0, 0.0, 0.1, 0.2], "model": "centernet-coco"}]


@pytest.mark.realweights
def test_keep_devices_reuses_the_captioners_detections_instead_of_looking_again(tiny_model, tiny_settings, cam,
                                                                               captioned):
    stage = GeneratorStage(_components(tiny_model, cam), tiny_settings)
    event = captioned("job-reuse", {"mode": "keep_devices", "width": 96, "height": 64})
    event.data["captioning"]["detections"] = _CAPTIONER_SAW
    request = parse_request(event.data, tiny_settings, tiny_model.presets, event.job_id)

    timings = {}
    kept, fallback = stage._kept_devices(draw_desk(seed=0, size=(320, 240)), request, timings)

    assert fallback is None and isinstance(kept, KeptDevices)
    assert set(timings) == {"mask_ms"}  # the locator did not run
    assert kept.detector == "captioner:centernet-coco+ssd-oidv4"
    # 4:3 photo cropped to 3:2 (1/18 off the top and bottom): boxes move into the crop's coordinates.
    assert [(d.label, d.score) for d in kept.devices] == [("monitor", 0.9), ("keyboard", 0.6)]
    assert kept.devices[0].box == pytest.approx((0.3, (0.1 - 1 / 18) * 18 / 16, 0.7, (0.5 - 1 / 18) * 18 / 16))
    assert kept.devices[1].centre == pytest.approx((0.5, (0.65 - 1 / 18) * 18 / 16))


@pytest.mark.realweights
def test_keep_devices_with_no_device_among_the_captioners_detections_restyles_and_says_why(
        tiny_model, tiny_settings, cam, captioned):
    stage = GeneratorStage(_components(tiny_model, cam), tiny_settings)
    event = captioned("job-nodev", {"mode": "keep_devices"})
    event.data["captioning"]["detections"] = _CAPTIONER_SAW[2:]  # only a plant
    request = parse_request(event.data, tiny_settings, tiny_model.presets, event.job_id)
    assert stage._kept_devices(draw_desk(seed=0, size=(320, 240)), request, {}) == (None, "no_devices_found")


@pytest.mark.realweights
def test_with_reuse_off_the_locator_looks_at_the_photo_itself(tiny_model, tiny_settings, cam, captioned):
    stage = GeneratorStage(_components(tiny_model, cam), tiny_settings.model_copy(update={"reuse_detections": False}))
    event = captioned("job-look", {"mode": "keep_devices", "width": 96, "height": 64})
    event.data["captioning"]["detections"] = _CAPTIONER_SAW[2:]
    request = parse_request(event.data, tiny_settings, tiny_model.presets, event.job_id)

    timings = {}
    kept, _ = stage._kept_devices(draw_desk(seed=0, size=(320, 240)), request, timings)

    assert "detect_ms" in timings and kept is not None and kept.detector == cam.name

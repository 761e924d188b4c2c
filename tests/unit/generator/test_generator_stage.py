import io

import pytest
from PIL import Image

from deskgen.common.errors import InvalidInputError
from deskgen.common.events import Event
from deskgen.common.stage import Emit
from deskgen.services.generator.components import Placement
from deskgen.services.generator.masks import DeviceMasker
from deskgen.services.generator.request import derive_seed
from deskgen.services.generator.stage import Components, GeneratorStage
from support.blobs import MemoryBlobs

CPU = Placement.pick("cpu")


def _event(job_id="job-1", request=None, captioning=None):
    captioning = {"prompt": "a clean modern desk with a monitor", "negative_prompt": "blurry",
                  "preset": "basic", "concept": "BASIC"} if captioning is None else captioning
    data = {"job_id": job_id, "image_key": f"uploads/{job_id}/original.jpg", "uploaded_at": "2026-11-25T12:00:00Z",
            "request": request or {}, "timeline": {}, "captioning": captioning}
    return Event(kind="captioned", id=f"{job_id}-c", source="test", time="2026-11-25T12:00:01Z", data=data)


def _blobs(event, size=(64, 64)):
    """The job's photo: restyle reads its size when the request names none."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 120, 150)).save(buffer, "PNG")
    return MemoryBlobs({event.data["image_key"]: buffer.getvalue()})


def _handle(stage, event, size=(64, 64)):
    return stage.handle(event, _blobs(event, size))


@pytest.fixture
def stage(tiny_model, tiny_settings):
    return GeneratorStage(Components(tiny_model, DeviceMasker("", grow=0.02, placement=CPU)), tiny_settings)


def test_handle_returns_a_png_of_the_requested_size_under_the_generated_key(stage):
    outcome = _handle(stage, _event(request={"width": 96, "height": 64, "preset": "mix"}))
    assert isinstance(outcome, Emit)
    (blob,) = outcome.blobs
    assert blob.key == "generated/job-1/mix.png" and blob.content_type == "image/png"
    image = Image.open(io.BytesIO(blob.data))
    assert image.format == "PNG" and image.size == (96, 64)
    section = outcome.section
    assert section["image_key"] == blob.key
    assert section["adapters"] == {"dalle": 0.6, "ott": 0.4, "3d": 0.4}
    assert (section["steps"], section["width"], section["height"]) == (2, 96, 64)
    assert section["seed"] == derive_seed("job-1")
    assert section["weights"] == "dev-random" and section["peak_gpu_mem_bytes"] is None
    timings = section["timings"]
    assert set(timings) == {"inference_ms", "denoise_ms", "decode_ms", "encode_ms", "preset_switch_ms"}
    assert 0 < timings["denoise_ms"] <= timings["inference_ms"] and timings["decode_ms"] > 0
    assert section["locator"] == "off" and "preset_fallback" not in section
    assert section["model"]["version"] == "dev-random-tiny-seed0"


def test_a_replayed_job_regenerates_the_same_png_bytes(stage):
    first = _handle(stage, _event("job-7")).blobs[0]
    _handle(stage, _event("job-8", request={"preset": "dalle_only", "scheduler": "euler_a"}))
    again = _handle(stage, _event("job-7")).blobs[0]
    assert (first.key, first.data) == (again.key, again.data)
    assert first.key == "generated/job-7/basic.png"


def test_the_captioner_preset_is_used_when_the_request_names_none(stage):
    assert _handle(stage, _event()).section["preset"] == "basic"


def test_bad_options_are_rejected_before_generating(stage, tiny_model):
    with pytest.raises(InvalidInputError) as caught:
        _handle(stage, _event(request={"steps": 500}))
    assert caught.value.reason == "options_out_of_bounds" and "steps" in caught.value.detail


def test_a_missing_caption_fails_the_job(stage):
    with pytest.raises(InvalidInputError) as caught:
        _handle(stage, _event(captioning={}))
    assert (caught.value.reason, caught.value.status) == ("caption_missing", "failed")


def test_stage_declares_its_contract(stage):
    assert (stage.name, stage.consumes, stage.produces, stage.section) == (
        "generator", "captioned", "generated", "output")

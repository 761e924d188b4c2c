"""The captioner stage end to end on tiny dev weights (random BLIP + the real BERT vocabulary)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from deskgen.common import events
from deskgen.common.errors import InvalidInputError
from deskgen.common.events import Event
from deskgen.services.captioner.devweights import build_dev, build_tokenizer
from deskgen.services.captioner.stage import build_captioner
from deskgen.services.captioner.model import BlipCaptioner, auto_precision
from deskgen.services.captioner.settings import SEED_PROMPTS, CaptionerSettings
from deskgen.services.captioner.stage import CaptionerStage

FRIDAY = "2026-11-27T09:30:00Z"


class PhotoBlobs:
    """Blobs with one photo under ``uploads/job-1/original.jpg``."""

    def __init__(self):
        self.photo = Image.new("RGB", (96, 72), (140, 110, 80))
        self.read_keys: list[str] = []

    def read(self, key: str) -> bytes:
        raise AssertionError("the captioner reads images through image()")

    def image(self, key: str) -> Image.Image:
        self.read_keys.append(key)
        if key != "uploads/job-1/original.jpg":
            raise InvalidInputError("object_missing", key)
        return self.photo


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return build_dev(tmp_path_factory.mktemp("dev-models") / "captioner-tiny", size="tiny")


@pytest.fixture(scope="module")
def captioner(tiny_dir):
    model = BlipCaptioner(tiny_dir.as_uri(), SEED_PROMPTS, max_new_tokens=8)
    model.load()
    return model


def classified(request: dict | None = None) -> Event:
    data = {
        "job_id": "job-1", "image_key": "uploads/job-1/original.jpg", "uploaded_at": FRIDAY,
        "request": request or {},
        "timeline": {"classifier": {"received": FRIDAY, "finished": FRIDAY}},
        "classification": {"label": "desk", "score": 0.9, "threshold": 0.5,
                           "model": {"name": "x", "version": "1"}, "inference_ms": 1.0},
    }
    return Event(kind="classified", id="e1", source="/deskgen/classifier", time=FRIDAY, data=data)


def test_tokenizer_follows_blips_conventions():
    tokenizer = build_tokenizer()
    assert len(tokenizer) == 30524
    assert (tokenizer.bos_token, tokenizer.bos_token_id) == ("[DEC]", 30522)
    assert (tokenizer.pad_token_id, tokenizer.sep_token_id, tokenizer.cls_token_id) == (0, 102, 101)
    ids = tokenizer("desk_setup: with a laptop").input_ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "desk _ setup : with a laptop"


def test_dev_weights_say_they_are_random(captioner):
    assert captioner.weights == "dev-random"
    assert captioner.card["name"] == "captioner-tiny" and captioner.card["version"].startswith("sha256:")


def test_one_batch_with_a_shared_image_encoding_decodes_like_blips_own_generate(captioner):
    image = PhotoBlobs().photo
    batched = captioner.caption(image).captions
    pixels = captioner.pixel_values(image)
    for caption in batched:
        inputs = captioner.processor.tokenizer(caption.prompt, return_tensors="pt")
        alone = captioner.model.generate(pixel_values=pixels, input_ids=inputs.input_ids,
                                         attention_mask=inputs.attention_mask, max_new_tokens=8)
        assert captioner.decode(alone) == [caption.text]


def test_captions_echo_the_prompt_and_decoding_is_deterministic(captioner):
    image = PhotoBlobs().photo
    first, second = captioner.caption(image), captioner.caption(image)
    assert [c.text for c in first.captions] == [c.text for c in second.captions]
    assert first.captions[2].text.startswith("desk _ setup :")
    assert set(first.timings) >= {"inference_ms", "decode_ms"}


def test_handle_emits_a_captioning_section_the_event_schema_accepts(captioner):
    blobs = PhotoBlobs()
    stage = CaptionerStage(captioner)
    outcome = stage.handle(classified({"concept": "WEEKDAY"}), blobs)
    section = outcome.section
    assert blobs.read_keys == ["uploads/job-1/original.jpg"]
    assert [c["prompt"] for c in section["captions"]] == list(SEED_PROMPTS)
    assert (section["concept"], section["preset"], section["theme"]) == ("WEEKDAY", "weekday", "friday")
    assert section["weights"] == "dev-random"
    assert section["model"]["uri"] == captioner.uri
    assert section["prompt"] and section["negative_prompt"]
    assert all(k["count"] >= 1 for k in section["keywords"])
    events.validate("captioned", {**classified().data, "captioning": section})


def test_an_unknown_concept_is_rejected_before_the_image_is_read(captioner):
    blobs = PhotoBlobs()
    with pytest.raises(InvalidInputError, match="unknown_concept"):
        CaptionerStage(captioner).handle(classified({"concept": "NOPE"}), blobs)
    assert blobs.read_keys == []


def test_a_category_both_included_and_excluded_is_rejected_before_the_image_is_read(captioner):
    blobs = PhotoBlobs()
    request = {"categories": {"include": ["monitor", "chair"], "exclude": ["chair"]}}
    with pytest.raises(InvalidInputError, match="categories_conflict: .*chair") as caught:
        CaptionerStage(captioner).handle(classified(request), blobs)
    assert (caught.value.status, blobs.read_keys) == ("rejected", [])


def test_stage_declares_its_contract(captioner):
    stage = CaptionerStage(captioner)
    assert (stage.name, stage.consumes, stage.produces, stage.section) == \
        ("captioner", "classified", "captioned", "captioning")


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_paths_caption_too(tiny_dir, precision):
    model = BlipCaptioner(tiny_dir.as_uri(), SEED_PROMPTS, max_new_tokens=4, min_new_tokens=4, precision=precision)
    model.load()
    captions = model.caption(PhotoBlobs().photo).captions
    assert [c.text.split()[:4] for c in captions][0] == ["this", "is", "a", "photo"]


def test_auto_precision_is_fp16_on_a_gpu_and_never_fp16_on_the_cpu():
    assert auto_precision(torch.device("cuda")) == "fp16"
    assert auto_precision(torch.device("cpu")) in ("bf16", "int8")


def test_settings_build_the_seed_captioner(monkeypatch):
    monkeypatch.setenv("DESKGEN_CAPTIONER_MAX_NEW_TOKENS", "12")
    monkeypatch.setenv("DESKGEN_CAPTIONER_DEVICE", "cpu")
    captioner = build_captioner(CaptionerSettings())
    assert captioner.prompts == SEED_PROMPTS and captioner.max_new_tokens == 12
    assert captioner.uri == "hf://Salesforce/blip-image-captioning-base" and not captioner.loaded

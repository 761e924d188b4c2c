"""tests/data/desk-photos: every photo has its provenance and labels, and is stored the way its README says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

PHOTOS = Path(__file__).resolve().parents[1] / "data" / "desk-photos"
# The label vocabulary of the folder's README: presence of each object, read by eye.
VOCABULARY = {"monitor", "laptop", "keyboard", "mouse", "desk", "chair", "lamp", "speaker", "microphone",
              "headphones", "mug", "plant", "phone", "book", "pc_tower", "tablet"}
FIELDS = ("file", "source_repo", "source_path", "commit", "licence", "author", "width", "height", "objects")
ENTRIES = json.loads((PHOTOS / "provenance.json").read_text())


def test_every_photo_in_the_folder_has_exactly_one_entry():
    files = [entry["file"] for entry in ENTRIES]
    assert len(files) == len(set(files)), "a photo is listed twice"
    assert sorted(files) == sorted(p.name for p in PHOTOS.iterdir() if p.suffix == ".jpg")
    assert {p.suffix for p in PHOTOS.iterdir()} <= {".jpg", ".json", ".md"}, "a file that is not a listed photo"
    assert len(ENTRIES) >= 30


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_each_entry_names_its_source_licence_and_objects(entry):
    assert set(entry) == set(FIELDS), entry["file"]
    assert all(isinstance(entry[f], str) and entry[f].strip() for f in FIELDS[:6]), entry["file"]
    assert entry["source_repo"].count("/") == 1
    assert len(entry["commit"]) == 40 and all(c in "0123456789abcdef" for c in entry["commit"])
    objects = entry["objects"]
    assert objects and len(objects) == len(set(objects)), entry["file"]
    assert set(objects) <= VOCABULARY, set(objects) - VOCABULARY


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_each_photo_is_a_small_jpeg_of_the_listed_size_without_metadata(entry):
    with Image.open(PHOTOS / entry["file"]) as photo:
        assert photo.format == "JPEG" and photo.mode == "RGB"
        assert photo.size == (entry["width"], entry["height"]) and max(photo.size) <= 640
        assert not photo.getexif(), f"{entry['file']} keeps EXIF"
        assert not {"icc_profile", "xmp", "comment"} & set(photo.info), photo.info.keys()

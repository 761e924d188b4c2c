"""Dev weights: the real checkpoint format, loaded through the real loader, named as random."""

from __future__ import annotations

import json

import pytest

from deskgen.services.classifier.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from deskgen.services.classifier.devweights import build_dev


def test_tiny_dev_weights_are_a_small_vgg16_checkpoint_folder(tiny_vgg_dir, tiny_classifier):
    assert (tiny_vgg_dir / WEIGHTS_FILE).stat().st_size < 1_000_000
    config = json.loads((tiny_vgg_dir / CONFIG_FILE).read_text())
    assert config["arch"] == "vgg16" and config["classes"] == ["desk", "not_desk"]
    assert "dev-random" in tiny_classifier.card["name"]


def test_a_rebuild_with_the_same_seed_is_bit_identical(tiny_vgg_dir, tmp_path):
    again = build_dev(tmp_path / "again", size="tiny")
    assert (again / WEIGHTS_FILE).read_bytes() == (tiny_vgg_dir / WEIGHTS_FILE).read_bytes()


@pytest.mark.parametrize(("options", "message"), [
    ({"arch": "efficientnet_lite0"}, "vgg16 only"), ({"size": "huge"}, "size must be"),
])
def test_unsupported_dev_weights_are_refused(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        build_dev(tmp_path / "x", **options)

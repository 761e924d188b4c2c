"""Model identity, decided in one place for every stage: name, version, uri and real or dev-random weights."""

import pytest

from deskgen.common.models import DEV_WEIGHTS, identify, mark_dev_weights


@pytest.mark.parametrize("uri, name, version", [
    ("hf://fluently/Fluently-XL-v2@abc123", "fluently/Fluently-XL-v2", "abc123"),
    ("hf://fluently/Fluently-XL-v2", "fluently/Fluently-XL-v2", "unpinned"),
    ("s3://models/generator/sdxl/", "sdxl", "unpinned"),
    ("file:///opt/models/blip-base", "blip-base", "unpinned"),
    ("/opt/models/blip-base", "blip-base", "unpinned"),
])
def test_real_weights_are_named_by_their_uri(tmp_path, uri, name, version):
    card = identify(uri, tmp_path)
    assert (card.name, card.version, card.uri, card.weights) == (name, version, uri, "real")
    assert card.as_dict() == {"name": name, "version": version, "uri": uri}


def test_dev_weights_say_so_in_their_version_and_weights(tmp_path):
    mark_dev_weights(tmp_path, size="tiny", seed=3)
    card = identify(str(tmp_path), tmp_path)
    assert (card.version, card.weights) == ("dev-random-tiny-seed3", DEV_WEIGHTS)


def test_a_models_own_name_and_version_win_and_dev_weights_are_still_marked(tmp_path):
    mark_dev_weights(tmp_path, size="tiny", seed=0)
    card = identify("hf://org/repo@rev", tmp_path, name="vgg16-desk", version="sha256:0123")
    assert (card.name, card.version, card.weights) == ("vgg16-desk", "sha256:0123", DEV_WEIGHTS)


def test_a_single_file_model_without_a_marker_folder_is_real(tmp_path):
    weights = tmp_path / "classifier.onnx"
    weights.write_bytes(b"")
    assert identify(str(weights), weights).weights == "real"

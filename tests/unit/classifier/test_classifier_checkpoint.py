"""The loader: checkpoint folders, bare VGG16 state dicts, and the errors that stop a bad start."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from classifier_helpers import draw_desk
from deskgen.common.errors import FatalError
from deskgen.services.classifier.checkpoint import CONFIG_FILE, load_checkpoint, save_checkpoint
from deskgen.services.classifier.model import DeskClassifier


def test_a_checkpoint_folder_roundtrips_exactly(tiny_vgg_dir, tmp_path):
    spec, network = load_checkpoint(tiny_vgg_dir, arch="efficientnet_lite0")
    assert spec.arch == "vgg16" and spec.classes == ("desk", "not_desk") and spec.threshold == 0.5
    copy_dir = save_checkpoint(tmp_path / "copy", network, spec)
    spec2, network2 = load_checkpoint(copy_dir, arch="vgg16")
    assert spec2 == spec
    for (key, a), (key2, b) in zip(network.state_dict().items(), network2.state_dict().items()):
        assert key == key2 and torch.equal(a, b)


def test_a_folder_of_another_arch_than_configured_stops_the_service(tiny_vgg_dir):
    with pytest.raises(FatalError, match="holds a vgg16 classifier"):
        load_checkpoint(tiny_vgg_dir, arch="efficientnet_lite0", expected_arch="efficientnet_lite0")


def test_a_folder_with_a_foreign_format_is_refused(tiny_vgg_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    config = json.loads((tiny_vgg_dir / CONFIG_FILE).read_text())
    (broken / CONFIG_FILE).write_text(json.dumps({**config, "format": "other/9"}))
    with pytest.raises(FatalError, match="format"):
        load_checkpoint(broken, arch="vgg16")


def test_weights_of_the_wrong_shape_are_a_clear_error(tmp_path):
    path = tmp_path / "small.pt"
    torch.save({"classifier.6.weight": torch.zeros(2, 4096), "classifier.6.bias": torch.zeros(2)}, path)
    with pytest.raises(FatalError, match="do not fit a vgg16"):
        load_checkpoint(path, arch="vgg16")


def test_an_unreadable_weights_file_is_a_clear_error(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(FatalError, match="cannot read classifier weights"):
        load_checkpoint(path, arch="vgg16")


@pytest.mark.slow
def test_the_original_services_vgg16_state_dict_serves_as_a_bare_file(tmp_path):
    """A torchvision VGG16 with classifier[6] = Linear(4096, 2), saved as .pth (DataParallel keys)
    or .safetensors, loads through the configured arch and scores exactly like the source model."""
    torch.manual_seed(0)
    source = torchvision.models.vgg16()
    source.classifier[6] = torch.nn.Linear(4096, 2)
    source.eval()
    state = source.state_dict()
    pth, safetensors = tmp_path / "desk_vgg16.pth", tmp_path / "desk_vgg16.safetensors"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, pth)
    save_file({k: v.contiguous() for k, v in state.items()}, str(safetensors))
    del state

    photo = draw_desk(seed=1)
    classifier = None
    for path in (pth, safetensors):
        classifier = DeskClassifier(str(path), arch="vgg16", backend="torch", threads=2)
        classifier.load()
        assert classifier.card["name"] == "vgg16-desk" and classifier.threshold == 0.5
        assert classifier.card["uri"] == str(path)
        (score,) = classifier.score([photo])
        with torch.inference_mode():
            from deskgen.services.classifier.networks import preprocessing_for
            expected = source(preprocessing_for("vgg16")([photo])).softmax(1)[0, 0]
        assert score.score == pytest.approx(float(expected), abs=1e-4)

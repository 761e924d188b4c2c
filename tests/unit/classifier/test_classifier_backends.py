"""The ONNX Runtime backend gives the torch backend's numbers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from classifier_helpers import draw_desk
from deskgen.common.errors import FatalError
from deskgen.services.classifier.model import DeskClassifier, export_onnx
from deskgen.services.classifier.onnx_model import OnnxDeskClassifier
from deskgen.services.classifier.settings import DEFAULT_MODEL_URI


def test_onnxruntime_and_torch_backends_agree(tiny_vgg_dir, tiny_classifier):
    onnx = DeskClassifier(str(tiny_vgg_dir), backend="onnxruntime", threads=2, max_batch=4)
    onnx.load()
    assert onnx.active_backend == "onnxruntime" and tiny_classifier.active_backend == "torch"
    photos = [draw_desk(seed=i, size=(320 + 40 * i, 240)) for i in range(5)]
    for a, b in zip(onnx.score(photos), tiny_classifier.score(photos)):
        assert a.score == pytest.approx(b.score, abs=1e-5)
        assert a.batch_size == b.batch_size


def test_scoring_before_load_is_a_programming_error(tiny_vgg_dir):
    with pytest.raises(RuntimeError, match="load"):
        DeskClassifier(str(tiny_vgg_dir)).score([draw_desk()])


@pytest.mark.realweights
def test_exported_onnx_serves_without_torch_and_matches(tmp_path, real_classifier):
    """The classifier image's path: the packaged EfficientNet-Lite0 exported to one .onnx file, served
    by OnnxDeskClassifier in a process that never imports torch, with the torch backend's results."""
    model = export_onnx(DEFAULT_MODEL_URI, tmp_path / "classifier.onnx")
    photos = [draw_desk(seed=i, size=(320 + 40 * i, 240)) for i in range(3)]
    for i, photo in enumerate(photos):
        photo.save(tmp_path / f"{i}.png")
    script = f"""
import json, sys
from PIL import Image
from deskgen.services.classifier.onnx_model import OnnxDeskClassifier
c = OnnxDeskClassifier({str(model)!r}, max_batch=2, threads=2)
c.load()
scores = c.score([Image.open({str(tmp_path)!r} + f"/{{i}}.png") for i in range(3)])
print(json.dumps({{"torch": [k for k in sys.modules if k.split(".")[0] == "torch"], "card": c.card,
                  "threshold": c.threshold, "scores": [[s.score, s.evidence] for s in scores]}}))
"""
    out = json.loads(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                                    text=True).stdout)
    assert out["torch"] == []
    assert out["threshold"] == real_classifier.threshold
    assert out["card"]["name"] == real_classifier.card["name"]
    assert out["card"]["version"] == real_classifier.card["version"]
    for (score, evidence), expected in zip(out["scores"], real_classifier.score(photos)):
        assert score == pytest.approx(expected.score, abs=1e-4)
        assert [e["label"] for e in evidence[:3]] == [e["label"] for e in expected.evidence[:3]]


def test_a_non_deskgen_onnx_file_is_a_one_line_fatal_error(tmp_path):
    bogus = tmp_path / "x.onnx"
    bogus.write_bytes(b"not a model")
    with pytest.raises(FatalError, match="DESKGEN_CLASSIFIER_MODEL"):
        OnnxDeskClassifier(str(bogus)).load()

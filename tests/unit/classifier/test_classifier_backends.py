"""The ONNX Runtime backend gives the torch backend's numbers."""

from __future__ import annotations

import pytest

from classifier_helpers import draw_desk
from deskgen.services.classifier.model import DeskClassifier


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

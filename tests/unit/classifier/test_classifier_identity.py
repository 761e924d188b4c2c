"""The classifier's identity: dev weights say dev-random, the packaged EfficientNet-Lite0 says real."""

from __future__ import annotations

import pytest

from deskgen.common.models import DEV_WEIGHTS
from deskgen.services.classifier.model import export_onnx
from deskgen.services.classifier.onnx_model import OnnxDeskClassifier
from deskgen.services.classifier.settings import DEFAULT_MODEL_URI


def test_tiny_dev_weights_load_with_a_dev_random_identity(tiny_classifier):
    assert tiny_classifier.identity is not None and tiny_classifier.identity.weights == DEV_WEIGHTS
    assert tiny_classifier.identity.version == "seed0"


def test_dev_weights_exported_to_onnx_keep_their_dev_random_identity(tiny_vgg_dir, tmp_path):
    classifier = OnnxDeskClassifier(str(export_onnx(str(tiny_vgg_dir), tmp_path / "dev.onnx")))
    classifier.load()
    assert classifier.identity is not None and classifier.identity.weights == DEV_WEIGHTS


@pytest.mark.realweights
def test_the_packaged_efficientnet_lite0_weights_are_real(real_classifier):
    assert real_classifier.identity is not None and real_classifier.identity.weights == "real"


@pytest.mark.realweights
def test_the_packaged_efficientnet_lite0_exported_to_onnx_is_real(tmp_path):
    classifier = OnnxDeskClassifier(str(export_onnx(DEFAULT_MODEL_URI, tmp_path / "real.onnx")))
    classifier.load()
    assert classifier.identity is not None and classifier.identity.weights == "real"

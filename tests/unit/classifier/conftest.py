"""Fixtures for the classifier tests: tiny dev weights and the default (real-weights) model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deskgen.services.classifier.devweights import build_dev
from deskgen.services.classifier.model import DeskClassifier
from deskgen.services.classifier.stage import ClassifierStage

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_vgg_dir(tmp_path_factory) -> Path:
    return build_dev(tmp_path_factory.mktemp("weights") / "classifier-vgg16-tiny", size="tiny")


@pytest.fixture(scope="session")
def tiny_classifier(tiny_vgg_dir) -> DeskClassifier:
    classifier = DeskClassifier(str(tiny_vgg_dir), backend="torch", max_batch=4)
    classifier.load()
    return classifier


@pytest.fixture
def tiny_stage(tiny_classifier) -> ClassifierStage:
    return ClassifierStage(tiny_classifier)


@pytest.fixture(scope="session")
def real_classifier() -> DeskClassifier:
    """The default model: the packaged ImageNet EfficientNet-Lite0 scored with the desk class set."""
    classifier = DeskClassifier(backend="torch", threads=2)
    classifier.load()
    return classifier

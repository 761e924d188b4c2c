"""Shared fixtures: the real local stack (Kafka + S3) and isolated pipelines on it."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

# One process here runs the classifier's ONNX Runtime and the catalogue's usearch. Loading usearch's native
# module (usearch 2.26.6, numkong 7.8.6) before onnxruntime 1.31.1 makes onnxruntime's import segfault; the
# other order is safe, and no service loads both.
importlib.import_module("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "stack"))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def stack():
    """The local Kafka broker and S3 server, started if they are not running; their client settings."""
    import localstack

    localstack.up()
    env = localstack.deskgen_env()
    os.environ.update(env)
    return env


@pytest.fixture
def pipeline(stack, tmp_path, request):
    """An isolated pipeline (own topics and bucket); its processes are stopped after the test and
    their logs printed if it failed."""
    from support.pipeline import Pipeline

    pipe = Pipeline(stack, tmp_path)
    yield pipe
    pipe.stop_all()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(pipe.describe_failure())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def dev_models(stack):
    """Settings for the real services with tiny dev weights (built once, kept in .cache/dev-models)."""
    from devenv import dev_model_env

    return dev_model_env()

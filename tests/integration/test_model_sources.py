"""Model URIs against the real S3 server: downloaded once into the cache, checked before each use."""

from __future__ import annotations

import pytest

from deskgen.common.errors import FatalError
from deskgen.common.models import ModelSources, resolve
from deskgen.common.settings import S3Settings, load

pytestmark = pytest.mark.integration


def test_s3_model_is_cached_checked_and_fetched_again_when_tampered(pipeline, tmp_path):
    files = {"models/tiny/1/config.json": b'{"arch": "tiny"}', "models/tiny/1/weights/model.bin": b"\x00" * 1000}
    for key, data in files.items():
        pipeline.store.put(key, data)
    uri = f"s3://{pipeline.bucket}/models/tiny/1"
    sources = ModelSources(tmp_path, load(S3Settings))

    local = resolve(uri, sources)

    assert (local / "config.json").read_bytes() == files["models/tiny/1/config.json"]
    assert (local / "weights" / "model.bin").stat().st_size == 1000
    pipeline.store.put("models/tiny/1/config.json", b'{"arch": "changed upstream"}')
    assert (resolve(uri, sources) / "config.json").read_bytes() == files["models/tiny/1/config.json"], \
        "a verified cached copy is used as is"
    (local / "weights" / "model.bin").write_bytes(b"\x01" * 1000)  # a torn or tampered cached file
    assert (resolve(uri, sources) / "config.json").read_bytes() == b'{"arch": "changed upstream"}', \
        "a cache that fails its manifest is fetched again"


def test_missing_s3_model_fails_clearly(pipeline, tmp_path):
    with pytest.raises(FatalError, match="no objects under that prefix"):
        resolve(f"s3://{pipeline.bucket}/models/nothing-here", ModelSources(tmp_path, load(S3Settings)))

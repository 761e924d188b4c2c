"""Model sources are passed in: without a cache nothing is downloaded, and nothing reads the environment."""

from __future__ import annotations

import pytest

from deskgen.common.errors import FatalError
from deskgen.common.models import ModelSources, resolve


@pytest.mark.parametrize("uri", ["s3://bucket/models/x", "hf://org/name"])
def test_a_download_without_a_model_cache_is_refused_by_name(uri, monkeypatch):
    monkeypatch.setenv("DESKGEN_MODEL_CACHE", "/should/not/be/read")
    with pytest.raises(FatalError, match="DESKGEN_MODEL_CACHE"):
        resolve(uri)


def test_an_s3_model_without_s3_settings_is_refused(tmp_path):
    with pytest.raises(FatalError, match="DESKGEN_S3_"):
        resolve("s3://bucket/models/x", ModelSources(cache_dir=tmp_path))

"""The styles topic on the real broker: `deskgen adapters` publishes, lists and deletes; a generator's table
fetches and checks each adapter, and a record that does not resolve or whose file differs reaches the DLQ
while the adapter before it stays."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deskgen.common.settings import KafkaSettings, RuntimeSettings, load
from deskgen.common.tables import TableFeed, publish
from deskgen.services.generator.components import lora_file
from deskgen.services.generator.styles import (STYLES_KIND, AdapterRow, PresetRow, StyleTable, adapter_record,
                                               file_sha256, preset_record)

pytestmark = pytest.mark.integration


def _adapters(pipeline, dev_models, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deskgen.common.cli", "adapters", *args], capture_output=True,
                          text=True, env={**os.environ, **pipeline.env, **dev_models}, timeout=300)


def _replay(pipeline, monkeypatch, table: StyleTable) -> StyleTable:
    monkeypatch.setenv("DESKGEN_TOPIC_PREFIX", pipeline.prefix)
    feed = TableFeed(table, load(KafkaSettings), load(RuntimeSettings), stage="generator")
    feed.start()
    try:
        assert feed.wait(60)
    finally:
        feed.close()
    return table


@pytest.fixture
def lora(dev_models):
    """A dev LoRA folder and the sha256 of its file."""
    folder = dev_models["DESKGEN_GENERATOR_LORA_OTT"].removeprefix("file://")
    return f"file://{folder}", file_sha256(lora_file(folder))


def test_the_cli_publishes_lists_and_deletes_adapters_and_presets(pipeline, dev_models, lora, monkeypatch):
    pipeline.create_topics()
    uri, sha = lora
    published = _adapters(pipeline, dev_models, "publish", "warm", uri, "--weight", "0.8")
    assert published.returncode == 0, published.stderr
    assert _adapters(pipeline, dev_models, "preset", "cosy", "warm=0.7", "dalle=0.3").returncode == 0
    listed = _adapters(pipeline, dev_models, "list").stdout
    assert f"sha256 {sha[:12]}" in listed and "cosy" in listed and '"warm": 0.7' in listed

    refused = _adapters(pipeline, dev_models, "preset", "odd", "nowhere=1")
    assert refused.returncode == 2 and "names unknown adapters ['nowhere']" in refused.stderr
    assert "Traceback" not in refused.stderr

    assert _adapters(pipeline, dev_models, "delete", "warm").returncode == 0
    table = _replay(pipeline, monkeypatch, StyleTable())
    assert set(table.rows) == {"preset:cosy"}
    assert [change.key for change in table.take()] == ["adapter:warm", "preset:cosy", "adapter:warm"]


def test_an_adapter_that_does_not_resolve_or_differs_goes_to_the_dlq_and_the_old_one_stays(pipeline, dev_models, lora,
                                                                                          monkeypatch):
    pipeline.create_topics()
    uri, sha = lora
    good = AdapterRow(name="warm", uri=uri, sha256=sha)
    publish(pipeline.kafka, pipeline.topic(STYLES_KIND), [
        adapter_record(good),
        adapter_record(good.model_copy(update={"sha256": "0" * 64})),
        adapter_record(good.model_copy(update={"uri": "file:///nowhere/lora"})),
        preset_record(PresetRow(name="cosy", adapters={"warm": 1.0})),
    ])
    table = _replay(pipeline, monkeypatch, StyleTable())
    assert table.rows["adapter:warm"] == good.model_copy(update={"path": str(lora_file(uri.removeprefix("file://")))})
    reasons = sorted(record["reason"] for record in pipeline.dlq(2))
    assert reasons == ["adapter_sha256_mismatch", "adapter_unresolved"]

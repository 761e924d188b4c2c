"""The stage registry is the topology: events, the AsyncAPI document and the CLI read it, and a fourth stage
registered there joins them with no other edit (the chart's side: tests/chart/test_chart_topology.py)."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import yaml

import asyncapi
from deskgen.common import events, topology
from deskgen.common.topology import StageSpec
from support.toy_stage import TOY, toy_stage


def test_the_registry_holds_the_three_stages_in_flow_order():
    assert [(s.name, s.consumes, s.produces) for s in topology.STAGES.values()] == [
        ("classifier", "uploaded", "classified"), ("captioner", "classified", "captioned"),
        ("generator", "captioned", "generated")]
    assert topology.event_kinds() == events.KINDS == ("uploaded", "classified", "captioned", "generated", "dlq")


def test_cloudevents_types_keep_their_published_strings():
    assert events.CE_TYPES == {
        "uploaded": "com.deskgen.photo.uploaded", "classified": "com.deskgen.photo.classified",
        "captioned": "com.deskgen.photo.captioned", "generated": "com.deskgen.job.finished",
        "dlq": "com.deskgen.dlq.record", "product": "com.deskgen.product.upserted"}


def test_a_stage_name_or_an_input_kind_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="already registered"):
        topology.register(dataclasses.replace(TOY, name="captioner"))
    with pytest.raises(ValueError, match="already has a consumer: classifier"):
        topology.register(StageSpec(name="other", consumes="uploaded", produces="x", section="x", module="m",
                                    settings="m:S"))
    assert "other" not in topology.STAGES


def test_the_toy_stage_leaves_no_trace():
    with toy_stage():
        assert list(topology.STAGES)[-1] == "toy" and "sketched" in topology.event_kinds()
    assert "toy" not in topology.STAGES and "sketched" not in topology.event_kinds()


def test_the_chart_file_lists_every_stage_and_kind():
    data = yaml.safe_load(topology.chart_yaml())
    assert [s["name"] for s in data["stages"]] == list(topology.STAGES)
    assert data["stages"][2] == {"name": "generator", "consumes": "captioned", "produces": "generated"}
    assert data["kinds"] == list(topology.event_kinds())


@pytest.fixture
def toy_schemas(tmp_path, monkeypatch):
    """The schema folder with one schema for each of the toy's kinds (schemas stay files, one per kind)."""
    folder = tmp_path / "schemas"
    shutil.copytree(asyncapi.SCHEMAS, folder)
    for kind in (TOY.consumes, TOY.produces):
        shutil.copy(folder / "classified.json", folder / f"{kind}.json")
    monkeypatch.setattr(asyncapi, "SCHEMAS", folder)


def test_a_fourth_stage_joins_the_asyncapi_document(toy_schemas):
    plain = yaml.safe_load(asyncapi.build())
    with toy_stage():
        document = yaml.safe_load(asyncapi.build())
    added = set(document["channels"]) - set(plain["channels"])
    assert added == {"sketched", "toyed"}
    assert document["channels"]["toyed"]["address"] == "deskgen.toyed"
    toyed = document["components"]["messages"]["photoToyed"]
    assert (toyed["title"], toyed["summary"]) == ("com.deskgen.photo.toyed", TOY.summary)
    assert toyed["description"].startswith("Produced by: toy.")
    assert document["operations"]["watchToyed"]["description"].startswith("The output of toy")
    assert "com.deskgen.photo.sketched" in document["components"]["schemas"]["cloudEventsHeaders"]["properties"][
        "ce_type"]["enum"]
    assert yaml.safe_load(asyncapi.build()) == plain

"""The product catalogue on the real broker: replay, live upserts and tombstones, bad records, replicas
and the CLI (tests/e2e/test_products.py runs it through the real services)."""

from __future__ import annotations

import json
import shutil

import pytest

from deskgen.common import events
from deskgen.common.catalogue.embedder import SentenceEmbedder
from deskgen.common.catalogue.index import Catalogue
from deskgen.common.settings import KafkaSettings, RuntimeSettings, load
from deskgen.common.tables import TableFeed
from deskgen.services.captioner.keywords import extract_keywords
from deskgen.services.captioner.recommend import Recommender
from support.catalogue import SAMPLE, poll, products_cli, write_products

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CAPTIONS = [("This is a photo of", "this is a photo of a desk with a mechanical keyboard and a monitor")]


@pytest.fixture(scope="module")
def embedder():
    model = SentenceEmbedder()
    model.load()
    return model


def replica(embedder, cache_dir, name: str) -> tuple[Catalogue, TableFeed]:
    catalogue = Catalogue(embedder, cache_dir=cache_dir, stage=name)
    catalogue.load()
    feed = TableFeed(catalogue, load(KafkaSettings), load(RuntimeSettings), stage=name)
    feed.start()
    return catalogue, feed


def test_replicas_replay_the_catalogue_follow_it_live_and_agree(pipeline, embedder, tmp_path):
    pipeline.create_topics(partitions=3)
    sample = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    assert products_cli(pipeline, "load", str(SAMPLE)).returncode == 0
    # A record that breaks the schema, and a tombstone for an id that never existed.
    bad = events.encode("product", sample[0], source="/tests", key="BAD-1")
    pipeline.produce_raw("products", b"BAD-1", bad.value.replace(b'"available":', b'"availabl":'), bad.headers)
    pipeline.produce_raw("products", b"NEVER-EXISTED", None)

    first, first_feed = replica(embedder, tmp_path / "cache-a", "replica-a")
    try:
        assert first_feed.wait(300)
        assert len(first.products) == len(sample) and "BAD-1" not in first.products
        [dead] = pipeline.dlq(1)
        assert (dead["stage"], dead["reason"], dead["source"]["topic"]) == ("replica-a", "event_invalid",
                                                                          pipeline.topic("products"))
        assert "availabl" in dead["detail"]

        # live: an upsert and a tombstone take effect within seconds
        new = {**sample[0], "id": "KB-LIVE", "category": "keyboard", "name": "Walnut Mechanical Keyboard",
               "brand": "Acme", "available": True, "tags": ["walnut", "mechanical"], "description": "Walnut case."}
        assert products_cli(pipeline, "load", write_products(tmp_path / "new.jsonl", [new])).returncode == 0
        poll(lambda: "KB-LIVE" in first.products, what="the upsert")
        assert first.search("walnut mechanical keyboard", 1)[0][1]["id"] == "KB-LIVE"
        gone = sample[1]["id"]
        assert products_cli(pipeline, "delete", gone).returncode == 0
        poll(lambda: gone not in first.products, what="the tombstone")

        # a second replica (its own consumer, a copy of the embedding cache) holds the same catalogue
        shutil.copytree(tmp_path / "cache-a", tmp_path / "cache-b")
        second, second_feed = replica(embedder, tmp_path / "cache-b", "replica-b")
        try:
            assert second_feed.wait(300)
            assert second.products == first.products
            evidence = [{"label": "desk", "prob": 0.3}, {"label": "table lamp", "prob": 0.2}]
            picks = [Recommender(c).recommend(CAPTIONS, extract_keywords(CAPTIONS), evidence).products
                     for c in (first, second)]
            assert picks[0] == picks[1] and [p["category"] for p in picks[0][:2]] == ["keyboard", "monitor"]
        finally:
            second_feed.close()
    finally:
        first_feed.close()


def test_cli_refuses_a_file_with_an_invalid_product_and_publishes_nothing(pipeline, tmp_path):
    pipeline.create_topics()
    good = json.loads(SAMPLE.read_text().splitlines()[0])
    path = write_products(tmp_path / "mixed.jsonl", [good, {**good, "id": "X-2", "category": "toaster"}])

    refused = products_cli(pipeline, "load", path)
    bad_id = products_cli(pipeline, "delete", "../etc")

    assert refused.returncode == 2 and "mixed.jsonl:2" in refused.stderr and "nothing published" in refused.stderr
    assert bad_id.returncode == 2 and "product_id_invalid" in bad_id.stderr
    assert pipeline.read("products", timeout=3) == []

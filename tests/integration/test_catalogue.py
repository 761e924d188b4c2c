"""The product catalogue on the real broker: replay of the product vectors and the products, live upserts and
tombstones, bad records, replicas that embed nothing, the indexer and the CLI (tests/e2e/test_products.py runs it
through the real services)."""

from __future__ import annotations

import json
import threading

import pytest

from deskgen.common import events
from deskgen.common.catalogue import product_record
from deskgen.common.catalogue.embedder import SentenceEmbedder
from deskgen.common.catalogue.index import Catalogue
from deskgen.common.catalogue.product_vectors import VECTORS_KIND
from deskgen.common.settings import KafkaSettings, RuntimeSettings, load
from deskgen.common.tables import Tables, publish
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


def replica(embedder, name: str) -> tuple[Catalogue, Tables]:
    """A captioner's catalogue as the runtime feeds it: the product vectors replayed, then the products."""
    catalogue = Catalogue(embedder, stage=name)
    tables = Tables((catalogue.vector_table, catalogue), load(KafkaSettings), load(RuntimeSettings), stage=name)
    tables.start()
    tables.wait(threading.Event())
    assert tables.ready
    return catalogue, tables


def test_replicas_replay_vectors_and_products_embed_nothing_follow_live_and_agree(pipeline, embedder, tmp_path):
    pipeline.create_topics(partitions=3)
    sample = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    loaded = products_cli(pipeline, "load", str(SAMPLE))
    assert loaded.returncode == 0 and f"published {len(sample)} vectors" in loaded.stdout
    # A record that breaks the schema, a tombstone for an id that never existed, a vector without its headers.
    bad = events.encode("product", sample[0], source="/tests", key="BAD-1")
    pipeline.produce_raw("products", b"BAD-1", bad.value.replace(b'"available":', b'"availabl":'), bad.headers)
    pipeline.produce_raw("products", b"NEVER-EXISTED", None)
    pipeline.produce_raw(VECTORS_KIND, b"BAD-2", b"\0" * 768)

    first, first_tables = replica(embedder, "replica-a")
    try:
        assert len(first.products) == len(sample) and "BAD-1" not in first.products
        assert first.embedded == 0, "a product with a published vector was embedded again"
        dead = sorted(pipeline.dlq(2), key=lambda d: d["reason"])
        assert [(d["stage"], d["reason"], d["source"]["topic"]) for d in dead] == [
            ("replica-a", "event_invalid", pipeline.topic("products")),
            ("replica-a", "vector_invalid", pipeline.topic(VECTORS_KIND))]

        # live: an upsert (with its vector) and a tombstone take effect within seconds
        new = {**sample[0], "id": "KB-LIVE", "category": "keyboard", "name": "Walnut Mechanical Keyboard",
               "brand": "Acme", "available": True, "tags": ["walnut", "mechanical"], "description": "Walnut case."}
        assert products_cli(pipeline, "load", write_products(tmp_path / "new.jsonl", [new])).returncode == 0
        poll(lambda: "KB-LIVE" in first.products, what="the upsert")
        assert first.search("walnut mechanical keyboard", 1)[0][1]["id"] == "KB-LIVE"
        gone = sample[1]["id"]
        deleted = products_cli(pipeline, "delete", gone)
        assert deleted.returncode == 0 and "tombstones published" in deleted.stdout
        poll(lambda: gone not in first.products, what="the tombstone")

        # a second replica (its own consumers, nothing on disk) embeds nothing and holds the same catalogue
        second, second_tables = replica(embedder, "replica-b")
        try:
            assert second.products == first.products and second.embedded == 0
            evidence = [{"label": "desk", "prob": 0.3}, {"label": "table lamp", "prob": 0.2}]
            picks = [Recommender(c).recommend(CAPTIONS, extract_keywords(CAPTIONS), evidence).products
                     for c in (first, second)]
            assert picks[0] == picks[1] and [p["category"] for p in picks[0][:2]] == ["keyboard", "monitor"]
        finally:
            second_tables.close()
    finally:
        first_tables.close()


def test_the_indexer_publishes_missing_and_stale_vectors_and_tombstones_orphans(pipeline, embedder, tmp_path):
    pipeline.create_topics()
    sample = [json.loads(line) for line in SAMPLE.read_text().splitlines()[:20]]
    assert products_cli(pipeline, "load", write_products(tmp_path / "some.jsonl", sample[:5])).returncode == 0
    # products published by another producer (no vectors), one changed text, one deleted product's vector left
    changed = {**sample[0], "description": "Now in walnut."}
    publish(pipeline.kafka, pipeline.topic("products"), [product_record(p) for p in (changed, *sample[5:])])
    pipeline.produce_raw("products", sample[4]["id"].encode(), None)

    indexed = products_cli(pipeline, "index")

    assert indexed.returncode == 0, indexed.stderr
    assert "19 products: 16 vectors published, 1 orphaned vectors tombstoned" in indexed.stdout
    catalogue, tables = replica(embedder, "after-index")
    try:
        assert catalogue.embedded == 0 and len(catalogue.products) == 19
    finally:
        tables.close()


def test_cli_refuses_a_file_with_an_invalid_product_and_publishes_nothing(pipeline, tmp_path):
    pipeline.create_topics()
    good = json.loads(SAMPLE.read_text().splitlines()[0])
    path = write_products(tmp_path / "mixed.jsonl", [good, {**good, "id": "X-2", "category": "toaster"}])

    refused = products_cli(pipeline, "load", path)
    bad_id = products_cli(pipeline, "delete", "../etc")

    assert refused.returncode == 2 and "mixed.jsonl:2" in refused.stderr and "nothing published" in refused.stderr
    assert bad_id.returncode == 2 and "product_id_invalid" in bad_id.stderr
    assert pipeline.read("products", timeout=3) == []

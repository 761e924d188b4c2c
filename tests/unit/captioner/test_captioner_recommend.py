"""Recommendations with the real all-MiniLM-L6-v2 embeddings on the sample catalogue (no broker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deskgen.common.catalogue import Change
from deskgen.services.captioner.catalogue import Catalogue
from deskgen.services.captioner.embedder import SentenceEmbedder
from deskgen.services.captioner.keywords import extract_keywords
from deskgen.services.captioner.recommend import Recommender, desires, products_phrase

SAMPLE = Path(__file__).resolve().parents[3] / "stack" / "sample-catalogue.jsonl"
CAPTIONS = [("This is a photo of", "this is a photo of a desk with a mechanical keyboard and a monitor"),
            ("Q: What objects are on the desk? A:", "a keyboard and a computer monitor"),
            ("desk_setup:", "desk_setup: a mechanical keyboard, a monitor and a plant")]


def sample_products() -> list[dict]:
    return [json.loads(line) for line in SAMPLE.read_text().splitlines()]


@pytest.fixture(scope="module")
def embedder():
    model = SentenceEmbedder()
    model.load()
    return model


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("embeddings")


@pytest.fixture
def catalogue(embedder, cache_dir):
    """The sample catalogue; embedded once per module (the cache), indexed afresh per test."""
    catalogue = Catalogue(embedder, cache_dir=cache_dir)
    catalogue.load()
    catalogue.apply([Change(p["id"], p) for p in sample_products()])
    return catalogue


def recommend(catalogue, captions=CAPTIONS, evidence=(), **options):
    return Recommender(catalogue, None, **options).recommend(captions, extract_keywords(captions), list(evidence))


def test_the_sample_catalogue_is_big_and_varied_enough():
    products = sample_products()
    assert len(products) >= 200 and len({p["category"] for p in products}) >= 12
    assert len({p["id"] for p in products}) == len(products)
    assert any(not p["available"] for p in products)


def test_a_mechanical_keyboard_and_a_monitor_rank_keyboard_and_monitor_products_first(catalogue):
    picked = recommend(catalogue)

    assert [p["category"] for p in picked.products[:2]] == ["keyboard", "monitor"]
    assert "mechanical" in picked.products[0]["name"].lower()
    assert all(p["score"] > 0.3 for p in picked.products[:2])
    assert "a mechanical keyboard" in picked.products[0]["words"]
    assert picked.note is None
    hits = catalogue.search("a mechanical keyboard", 5)
    assert {p["category"] for _, p in hits} == {"keyboard"} and all("Mechanical" in p["name"] for _, p in hits[:3])


def test_unavailable_products_never_appear(catalogue):
    unavailable = {p["id"] for p in sample_products() if not p["available"]}
    everything = [p["id"] for _, p in catalogue.search("desk setup gear", 400)]
    picks = recommend(catalogue, evidence=[{"label": name, "prob": 0.2} for name in
                                           ("desk", "table lamp", "loudspeaker", "mouse", "laptop", "microphone")],
                      limit=20, per_category=5)

    assert len(everything) == len(sample_products()) - len(unavailable)
    assert not unavailable & set(everything)
    assert picks.products and not unavailable & {p["id"] for p in picks.products}


def test_at_most_one_per_category_and_n_in_total(catalogue):
    evidence = [{"label": name, "prob": 0.3} for name in ("desk", "table lamp", "loudspeaker", "mouse", "laptop")]
    picks = recommend(catalogue, evidence=evidence, limit=4).products

    assert len(picks) == 4
    assert len({p["category"] for p in picks}) == 4


def test_classifier_evidence_alone_asks_for_products_and_says_so(catalogue):
    picks = recommend(catalogue, captions=[("x", "qwerty zzz")], evidence=[{"label": "table lamp", "prob": 0.4},
                                                                            {"label": "desk", "prob": 0.01}])
    assert [(p["category"], p["words"]) for p in picks.products] == [("desk lamp", ["imagenet:table lamp"])]


def test_an_empty_catalogue_or_nothing_recognised_gives_no_products_and_a_reason(embedder):
    empty = Catalogue(embedder)
    empty.load()
    assert (recommend(empty).products, recommend(empty).note) == ([], "the catalogue is empty")
    empty.apply([Change("KEY-1", sample_products()[0])])
    nothing = recommend(empty, captions=[("x", "qwerty zzz")])
    assert nothing.products == [] and "no desk object recognised" in nothing.note


def test_upserts_replace_and_tombstones_delete_and_unknown_tombstones_do_nothing(catalogue):
    keyboard = {**sample_products()[0], "id": "KB-NEW", "category": "keyboard", "brand": "Acme",
                "name": "Mechanical Keyboard with Walnut Case", "available": True,
                "description": "A mechanical keyboard in a walnut case.", "tags": ["mechanical", "walnut"]}
    before = len(catalogue.products)
    catalogue.apply([Change("KB-NEW", keyboard)])
    assert catalogue.search("walnut mechanical keyboard", 1)[0][1]["id"] == "KB-NEW"

    catalogue.apply([Change("KB-NEW", {**keyboard, "available": False})])
    assert "KB-NEW" not in {p["id"] for _, p in catalogue.search("walnut mechanical keyboard", 20)}

    catalogue.apply([Change("KB-NEW", None), Change("NO-SUCH-ID", None)])
    assert len(catalogue.products) == before


def test_embeddings_are_cached_so_a_replay_does_not_embed_again(embedder, tmp_path):
    products = sample_products()[:40]
    first = Catalogue(embedder, cache_dir=tmp_path)
    first.load()
    first.apply([Change(p["id"], p) for p in products])

    class Refusing(SentenceEmbedder):
        def encode(self, texts):
            assert len(texts) <= 1, "a cached product was embedded again"
            return super().encode(texts)

    refusing = Refusing()
    refusing.load()
    second = Catalogue(refusing, cache_dir=tmp_path)
    second.load()
    second.apply([Change(p["id"], p) for p in products])
    query = embedder.encode(["monitor"])[0]
    assert [p["id"] for _, p in second.best("monitor", query, 3)] == [p["id"] for _, p in first.best("monitor", query, 3)]


def test_desires_are_ordered_by_weight_and_products_read_as_plain_words():
    wanted = desires(CAPTIONS, extract_keywords(CAPTIONS), [{"label": "desk", "prob": 0.5}])
    assert [d.category for d in wanted] == ["keyboard", "monitor", "plant", "desk"]
    assert wanted[0].query.startswith("keyboard, a mechanical keyboard")
    assert products_phrase([{"brand": "Keychron", "category": "keyboard"}, {"brand": "Dell", "category": "monitor"}]) \
        == "a Keychron keyboard and a Dell monitor"

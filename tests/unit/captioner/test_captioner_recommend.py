"""Recommendations with the real all-MiniLM-L6-v2 embeddings on the sample catalogue (no broker)."""

from __future__ import annotations

import pytest

from deskgen.common.catalogue.index import Catalogue
from deskgen.common.tables import Change
from deskgen.services.captioner.keywords import extract_keywords
from deskgen.services.captioner.recommend import Recommender, desires, products_phrase
from support.catalogue import catalogue_of, sample_products, embedder as loaded_embedder

CAPTIONS = [("This is a photo of", "this is a photo of a desk with a mechanical keyboard and a monitor"),
            ("Q: What objects are on the desk? A:", "a keyboard and a computer monitor"),
            ("desk_setup:", "desk_setup: a mechanical keyboard, a monitor and a plant")]


@pytest.fixture(scope="module")
def embedder():
    return loaded_embedder()


@pytest.fixture(scope="module")
def catalogue(embedder):
    return catalogue_of(embedder, sample_products())


def recommend(catalogue, captions=CAPTIONS, evidence=(), **options):
    return Recommender(catalogue, **options).recommend(captions, extract_keywords(captions), list(evidence))


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


def test_unavailable_products_are_never_recommended(catalogue):
    unavailable = {p["id"] for p in sample_products() if not p["available"]}
    picks = recommend(catalogue, evidence=[{"label": name, "prob": 0.2} for name in
                                           ("desk", "table lamp", "loudspeaker", "mouse", "laptop", "microphone")],
                      limit=20, per_category=5)

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


def test_desires_are_ordered_by_weight_and_products_read_as_plain_words():
    wanted = desires(CAPTIONS, extract_keywords(CAPTIONS), [{"label": "desk", "prob": 0.5}])
    assert [d.category for d in wanted] == ["keyboard", "monitor", "plant", "desk"]
    assert wanted[0].query.startswith("keyboard, a mechanical keyboard")
    assert products_phrase([{"brand": "Keychron", "category": "keyboard"}, {"brand": "Dell", "category": "monitor"}]) \
        == "a Keychron keyboard and a Dell monitor"


def test_the_stage_declares_the_product_vectors_then_the_catalogue_as_its_tables_and_leaves_feeding_them_to_the_runtime():
    from deskgen.services.captioner.settings import CaptionerSettings
    from deskgen.services.captioner.stage import build_stage

    stage = build_stage(CaptionerSettings())
    assert [(t.name, t.kind) for t in stage.tables] == [("product-vectors", "product-vectors"), ("catalogue", "products")]
    assert stage.tables == (stage.recommender.catalogue.vector_table, stage.recommender.catalogue)
    assert build_stage(CaptionerSettings(catalogue=False)).tables == ()

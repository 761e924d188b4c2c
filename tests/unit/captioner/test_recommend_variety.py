"""Recommendations vary with the job: the concept's words enter each category's query, no brand twice in one job,
and the same job always gets the same products (real all-MiniLM-L6-v2 embeddings, the sample catalogue)."""

from __future__ import annotations

import pytest

from deskgen.services.captioner.prompts import concept_book
from deskgen.services.captioner.recommend import Recommender, concept_style
from support.catalogue import catalogue_of, embedder, sample_products

FRIDAY = "2026-11-27T09:30:00Z"
EVIDENCE = [{"label": "monitor", "prob": 0.3}, {"label": "desk", "prob": 0.2}]
DETECTIONS = [{"label": "keyboard", "score": 0.6, "box": [0, 0, 1, 1], "model": "centernet-coco"},
              {"label": "chair", "score": 0.5, "box": [0, 0, 1, 1], "model": "ssd-oidv4"},
              {"label": "mouse", "score": 0.4, "box": [0, 0, 1, 1], "model": "ssd-oidv4"}]


@pytest.fixture(scope="module")
def catalogue():
    return catalogue_of(embedder(), sample_products())


def _ids(recommender: Recommender, concept: str) -> list[str]:
    style = concept_style({"concept": concept}, FRIDAY, concept_book())
    return [p["id"] for p in recommender.recommend([], [], EVIDENCE, DETECTIONS, style).products]


def test_the_concept_words_are_its_template_without_the_object_slot():
    book = concept_book()
    assert concept_style({"concept": "OIL"}, FRIDAY, book) == ("an oil painting of a desk setup, visible brush strokes, "
                                                               "rich warm colours, canvas texture")
    assert "relaxed Friday evening" in concept_style({"concept": "WEEKDAY"}, FRIDAY, book)  # the day's theme


def test_the_same_desk_gets_other_products_under_other_concepts(catalogue):
    recommender = Recommender(catalogue, limit=5)
    lists = {concept: _ids(recommender, concept) for concept in concept_book().concepts}
    assert len(set(map(tuple, lists.values()))) >= 3, lists
    assert all(len(ids) == 5 for ids in lists.values())


def test_no_brand_is_recommended_twice_in_one_job(catalogue):
    recommender = Recommender(catalogue, limit=20, per_category=3)
    evidence = [{"label": name, "prob": 0.2} for name in ("desk", "table lamp", "loudspeaker", "mouse", "laptop")]
    products = recommender.recommend([], [], evidence, DETECTIONS).products
    brands = [p["brand"] for p in products]
    assert len(products) >= 10 and len(brands) == len(set(brands)), brands


def test_the_same_job_gets_the_same_products(catalogue):
    recommender = Recommender(catalogue, limit=5)
    assert _ids(recommender, "CARTOON") == _ids(recommender, "CARTOON")

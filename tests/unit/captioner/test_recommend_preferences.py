"""What the request asks of its products (request.budget, request.categories) and how one job's products are
ranked: maximal marginal relevance, no brand twice, a per-job offset that is the same every time for a job.
The pure parts on hand-made vectors; the recommender on the sample catalogue with the real all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np
import pytest

from deskgen.common import events
from deskgen.common.errors import InvalidInputError
from deskgen.services.captioner.recommend import Desire, Preferences, Recommender, job_offset, mmr_order
from support.catalogue import catalogue_of, embedder, sample_products

EVIDENCE = [{"label": "monitor", "prob": 0.4}, {"label": "desk", "prob": 0.3}]
DETECTIONS = [{"label": "keyboard", "score": 0.6, "box": [0, 0, 1, 1], "model": "centernet-coco"},
              {"label": "chair", "score": 0.5, "box": [0, 0, 1, 1], "model": "ssd-oidv4"},
              {"label": "mouse", "score": 0.4, "box": [0, 0, 1, 1], "model": "ssd-oidv4"}]
UPLOAD = {"job_id": "job-1", "image_key": "uploads/job-1/original.jpg", "uploaded_at": "2026-11-27T09:30:00Z"}


def _unit(*rows: list[float]) -> np.ndarray:
    vectors = np.array(rows, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


# --- the request fields -------------------------------------------------------------------------------------

def test_budget_and_categories_are_optional_and_checked_by_the_schema():
    events.validate("uploaded", {**UPLOAD, "request": {}})
    events.validate("uploaded", {**UPLOAD, "request": {"budget": {"amount": 99.5, "currency": "EUR"},
                                                       "categories": {"include": ["monitor"], "exclude": ["chair"]}}})
    for bad, problem in (({"budget": {"amount": 0, "currency": "EUR"}}, "request/budget/amount"),
                         ({"budget": {"amount": 10, "currency": "eur"}}, "request/budget/currency"),
                         ({"budget": {"amount": 10}}, "'currency' is a required property"),
                         ({"categories": {"include": ["sofa"]}}, "request/categories/include/0: 'sofa'"),
                         ({"categories": {"include": []}}, "request/categories/include"),
                         ({"categories": {"exclude": ["chair", "chair"]}}, "non-unique"),
                         ({"categories": {"only": ["chair"]}}, "'only' was unexpected")):
        with pytest.raises(InvalidInputError, match="event_invalid") as caught:
            events.validate("uploaded", {**UPLOAD, "request": bad})
        assert problem in caught.value.detail, caught.value.detail


def test_a_category_both_included_and_excluded_is_a_conflict():
    with pytest.raises(InvalidInputError) as caught:
        Preferences.of({"categories": {"include": ["desk", "chair"], "exclude": ["chair", "plant"]}})
    assert (caught.value.reason, caught.value.status) == ("categories_conflict", "rejected")
    assert "chair" in caught.value.detail and "plant" not in caught.value.detail


def test_the_budget_is_per_product_in_its_own_currency():
    budget = Preferences.of({"budget": {"amount": 100, "currency": "EUR"}})
    assert budget.affordable({"price": {"amount": 100, "currency": "EUR"}})
    assert not budget.affordable({"price": {"amount": 100.01, "currency": "EUR"}})
    assert not budget.affordable({"price": {"amount": 20, "currency": "GBP"}})  # no exchange rates
    assert Preferences.of({}).affordable({"price": {"amount": 10 ** 6, "currency": "JPY"}})


def test_include_keeps_only_its_categories_seen_ones_first_and_exclude_drops():
    seen = [Desire("monitor", 1.0, ("detected:monitor",), ()), Desire("desk", 0.5, ("imagenet:desk",), ()),
            Desire("chair", 0.4, ("detected:chair",), ())]
    include = Preferences.of({"categories": {"include": ["webcam", "chair", "monitor"]}})
    assert [(d.category, d.words) for d in include.focus(seen)] == [
        ("monitor", ("detected:monitor",)), ("chair", ("detected:chair",)), ("webcam", ("requested:webcam",))]
    exclude = Preferences.of({"categories": {"exclude": ["desk"]}})
    assert [d.category for d in exclude.focus(seen)] == ["monitor", "chair"]


# --- the ranking --------------------------------------------------------------------------------------------

def test_mmr_with_lambda_one_is_the_similarity_order():
    vectors = _unit([1, 0, 0], [1, 0.01, 0], [0, 1, 0])
    assert mmr_order([0.9, 0.8, 0.7], vectors, np.empty((0, 3)), ["a", "b", "c"], set(), 3, 1.0) == [0, 1, 2]


def test_mmr_prefers_a_product_unlike_those_chosen():
    vectors = _unit([1, 0, 0], [1, 0.01, 0], [0, 1, 0])  # 1 is a near copy of 0, 2 is different
    assert mmr_order([0.9, 0.85, 0.8], vectors, np.empty((0, 3)), ["a", "b", "c"], set(), 2, 0.7) == [0, 2]
    chosen = _unit([1, 0, 0])  # already in the job (another category): 2 leads even alone
    assert mmr_order([0.9, 0.85, 0.8], vectors, chosen, ["a", "b", "c"], set(), 1, 0.7) == [2]


def test_mmr_never_takes_a_brand_twice_and_records_the_brands_it_took():
    vectors = _unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    taken = {"c"}
    assert mmr_order([0.9, 0.8, 0.95], vectors, np.empty((0, 3)), ["a", "a", "c"], taken, 3, 0.7) == [0]
    assert taken == {"a", "c"}


def test_the_job_offset_is_fixed_per_job_bounded_and_differs_between_jobs():
    offsets = [job_offset(f"job-{i}", "MON-1", 0.02) for i in range(50)]
    assert all(0 <= o < 0.02 for o in offsets) and len(set(offsets)) == 50
    assert job_offset("job-7", "MON-1", 0.02) == offsets[7]
    assert job_offset("", "MON-1", 0.02) == job_offset("job-1", "MON-1", 0.0) == 0.0


# --- the recommender on the sample catalogue ----------------------------------------------------------------

@pytest.fixture(scope="module")
def catalogue():
    return catalogue_of(embedder(), sample_products())


def _recommend(catalogue, request: dict, job_id: str = "job-1", **options):
    recommender = Recommender(catalogue, **{"limit": 5, **options})
    return recommender.recommend([], [], EVIDENCE, DETECTIONS, "", Preferences.of(request), job_id)


def test_a_budget_keeps_every_product_within_it_and_in_its_currency(catalogue):
    budget = {"amount": 150, "currency": "GBP"}
    picked = _recommend(catalogue, {"budget": budget}, limit=20, per_category=3)
    assert picked.products, picked.note
    assert all(p["price"]["currency"] == "GBP" and p["price"]["amount"] <= 150 for p in picked.products)
    unbudgeted = _recommend(catalogue, {}, limit=20, per_category=3).products
    assert any(p["price"]["amount"] > 150 or p["price"]["currency"] != "GBP" for p in unbudgeted)


def test_a_budget_nothing_fits_gives_no_products_and_says_why(catalogue):
    picked = _recommend(catalogue, {"budget": {"amount": 1, "currency": "EUR"}})
    assert picked.products == [] and "within 1 EUR" in picked.note


def test_excluded_categories_never_appear_and_included_ones_are_the_only_ones(catalogue):
    excluded = _recommend(catalogue, {"categories": {"exclude": ["monitor", "keyboard"]}}).products
    assert excluded and not {"monitor", "keyboard"} & {p["category"] for p in excluded}
    included = _recommend(catalogue, {"categories": {"include": ["webcam", "chair"]}}).products
    assert [(p["category"], p["words"]) for p in included] == [("chair", ["detected:chair"]),
                                                               ("webcam", ["requested:webcam"])]
    everything = _recommend(catalogue, {"categories": {"exclude": ["monitor", "desk", "keyboard", "chair", "mouse"]}})
    assert everything.products == [] and "leaves out every desired category" in everything.note


def test_one_job_always_gets_the_same_products_and_no_brand_twice(catalogue):
    first = _recommend(catalogue, {}, "job-42", limit=20, per_category=3).products
    assert first == _recommend(catalogue, {}, "job-42", limit=20, per_category=3).products
    brands = [p["brand"] for p in first]
    assert len(first) >= 10 and len(brands) == len(set(brands))


def test_other_jobs_with_the_same_desk_may_get_other_near_tie_products(catalogue):
    lists = {tuple(p["id"] for p in _recommend(catalogue, {}, f"job-{i}", job_variety=0.05).products)
             for i in range(12)}
    assert len(lists) >= 2
    assert len({tuple(p["id"] for p in _recommend(catalogue, {}, f"job-{i}", job_variety=0).products)
                for i in range(4)}) == 1

"""Product vectors (no broker): the vector record's encoding, and a catalogue that uses published vectors of its
own embedder and text, and embeds the rest itself (tests/integration/test_catalogue.py runs it on the broker)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from deskgen.common.catalogue.product_vectors import (VECTOR_REASONS, decode_vector, product_text, text_digest,
                                                      vector_record, vector_tombstone)
from deskgen.common.errors import InvalidInputError
from deskgen.common.tables import Change
from support.catalogue import catalogue_of, embedder as loaded_embedder, sample_products

PRODUCTS = sample_products()[:48]


@pytest.fixture(scope="module")
def embedder():
    return loaded_embedder()


@pytest.fixture(scope="module")
def published(embedder):
    """The vector records `deskgen products load` publishes for PRODUCTS."""
    texts = [product_text(p) for p in PRODUCTS]
    return [vector_record(p["id"], t, v, embedder.identity) for p, t, v in zip(PRODUCTS, texts, embedder.encode(texts))]


def _decoded(record):
    return decode_vector(record.key.decode(), record.value, record.headers)


def test_a_vector_record_is_float16_with_the_embedder_dimension_and_text_digest_in_its_headers(embedder):
    vector = embedder.encode(["a walnut desk"])[0]
    record = vector_record("DESK-1", "a walnut desk", vector, embedder.identity)
    decoded = _decoded(record)

    assert record.key == b"DESK-1" and len(record.value) == 2 * embedder.dim
    assert dict(record.headers)["dtype"] == b"float16" and dict(record.headers)["dim"] == str(embedder.dim).encode()
    assert decoded.embedder == embedder.identity and decoded.text_sha256 == text_digest("a walnut desk")
    assert decoded.vector.dtype == np.float32 and float(decoded.vector @ vector) > 0.9999
    assert vector_tombstone("DESK-1").value is None


def test_the_embedder_identity_names_the_model_its_weights_digest_and_token_limit(embedder):
    uri, _, rest = embedder.identity.partition("@sha256:")
    assert uri == embedder.uri and len(rest.split(";")[0]) == 16 and rest.endswith(";max_tokens=128")


@pytest.mark.parametrize("change, detail", [
    (lambda h, v: ([x for x in h if x[0] != "embedder"], v), "embedder missing"),
    (lambda h, v: ([(k, b"int8" if k == "dtype" else x) for k, x in h], v), "dtype"),
    (lambda h, v: ([(k, b"0" if k == "dim" else x) for k, x in h], v), "dim"),
    (lambda h, v: (h, v[:-2]), "bytes"),
    (lambda h, v: ([(k, b"abc" if k == "text-sha256" else x) for k, x in h], v), "text-sha256"),
    (lambda h, v: (h, np.full(len(v) // 2, np.inf, dtype="<f2").tobytes()), "not finite"),
])
def test_a_malformed_vector_record_is_refused_with_the_one_vector_reason(embedder, change, detail):
    record = vector_record("X-1", "text", embedder.encode(["text"])[0], embedder.identity)
    headers, value = change(record.headers, record.value)
    with pytest.raises(InvalidInputError) as refused:
        decode_vector("X-1", value, headers)
    assert refused.value.reason in VECTOR_REASONS and detail in refused.value.detail


def test_published_vectors_of_the_same_embedder_are_used_and_nothing_is_embedded(embedder, published):
    replayed = catalogue_of(embedder, PRODUCTS, vectors=published)
    embedded = catalogue_of(embedder, PRODUCTS)
    query = embedder.encode(["a quiet ergonomic chair"])[0]

    assert replayed.embedded == 0 and embedded.embedded == sum(p["available"] for p in PRODUCTS)
    for category in {p["category"] for p in PRODUCTS}:
        ours, theirs = replayed.best(category, query, 3), embedded.best(category, query, 3)
        assert [p["id"] for _, p in ours] == [p["id"] for _, p in theirs]


def test_vectors_of_another_embedder_or_dimension_are_not_used(embedder, published):
    foreign = [replace(r, headers=[(k, b"other-model@sha256:0" if k == "embedder" else v) for k, v in r.headers])
               for r in published[:10]]
    short = [vector_record(r.key.decode(), product_text(p), np.ones(8) / np.sqrt(8), embedder.identity)
             for r, p in zip(published[10:20], PRODUCTS[10:20])]
    catalogue = catalogue_of(embedder, PRODUCTS, vectors=foreign + short + published[20:])

    assert catalogue.embedded == sum(p["available"] for p in PRODUCTS[:20])


def test_a_product_whose_text_changed_is_embedded_again_until_its_new_vector_arrives(embedder, published):
    catalogue = catalogue_of(embedder, PRODUCTS, vectors=published)
    product = next(p for p in PRODUCTS if p["available"])
    renamed = {**product, "name": product["name"] + " Walnut Edition", "description": "Solid walnut."}

    catalogue.apply([Change(product["id"], renamed)])
    assert catalogue.embedded == 1
    vector = embedder.encode([product_text(renamed)])[0]
    catalogue.apply_vectors([Change(product["id"], _decoded(vector_record(product["id"], product_text(renamed),
                                                                           vector, embedder.identity)))])
    held = catalogue.vectors([renamed])[0]
    assert float(held @ vector) > 0.9999 and catalogue.embedded == 1


def test_a_vector_after_its_product_is_used_and_tombstones_delete_products_and_vectors(embedder, published):
    first, second = [i for i, p in enumerate(PRODUCTS) if p["available"]][:2]
    catalogue = catalogue_of(embedder, PRODUCTS, vectors=[r for i, r in enumerate(published) if i != first])
    assert catalogue.embedded == 1  # the product without a published vector

    catalogue.apply_vectors([Change(PRODUCTS[first]["id"], _decoded(published[first]))])  # arrives after it
    assert np.array_equal(catalogue.vectors([PRODUCTS[first]])[0], _decoded(published[first]).vector)

    catalogue.apply_vectors([Change(PRODUCTS[second]["id"], None)])  # a vector's tombstone: embedded on upsert
    catalogue.apply([Change(PRODUCTS[second]["id"], PRODUCTS[second]), Change(PRODUCTS[first]["id"], None)])
    found = {p["id"] for _, p in catalogue.search("desk gear", 100)}
    assert catalogue.embedded == 2 and PRODUCTS[second]["id"] in found
    assert PRODUCTS[first]["id"] not in found and PRODUCTS[first]["id"] not in catalogue.products

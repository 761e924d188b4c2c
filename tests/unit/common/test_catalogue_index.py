"""The catalogue table with the real all-MiniLM-L6-v2 embeddings on the sample catalogue (no broker):
decoding records, upserts and tombstones, search (the product vectors: test_catalogue_vectors.py)."""

from __future__ import annotations

import pytest

from deskgen.common import events
from deskgen.common.catalogue import DLQ_REASONS, product_record
from deskgen.common.catalogue.embedder import SentenceEmbedder
from deskgen.common.catalogue.index import Catalogue
from deskgen.common.errors import InvalidInputError
from deskgen.common.tables import Change
from support.catalogue import catalogue_of, sample_products, embedder as loaded_embedder


@pytest.fixture(scope="module")
def embedder():
    return loaded_embedder()


@pytest.fixture
def catalogue(embedder):
    return catalogue_of(embedder, sample_products())


def _refused(key: str, value: bytes, headers) -> str:
    with pytest.raises(InvalidInputError) as caught:
        Catalogue(SentenceEmbedder()).decode(key, value, headers)
    return caught.value.reason


def test_every_way_a_record_is_refused_has_a_declared_dlq_reason():
    record = product_record(sample_products()[0])
    key = record.key.decode()
    good = dict(record.headers)
    seen = {
        _refused(key, b"x" * (2 * 1024 * 1024), record.headers),
        _refused(key, record.value, [(k, v) for k, v in record.headers if k != "ce_id"]),
        _refused(key, record.value, list({**good, "ce_type": events.CE_TYPES["uploaded"].encode()}.items())),
        _refused(key, b"{not json", record.headers),
        _refused(key, record.value.replace(b'"available":', b'"availabl":'), record.headers),
        _refused("OTHER-ID", record.value, record.headers),
    }
    assert Catalogue(SentenceEmbedder()).decode(key, record.value, record.headers)["id"] == key
    # the feed's own reason (a record without a key) is the one left: tests/integration/test_catalogue.py
    assert seen == set(DLQ_REASONS) - {"table_key_missing"} and set(Catalogue.reasons) <= set(DLQ_REASONS)


def test_unavailable_products_are_kept_but_never_found(catalogue):
    unavailable = {p["id"] for p in sample_products() if not p["available"]}
    everything = [p["id"] for _, p in catalogue.search("desk setup gear", 400)]

    assert len(everything) == len(sample_products()) - len(unavailable)
    assert not unavailable & set(everything) and unavailable <= set(catalogue.products)


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

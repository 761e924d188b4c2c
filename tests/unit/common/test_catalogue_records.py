"""Catalogue records: the product schema, keys, tombstones and the category vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deskgen.common import events
from deskgen.common.catalogue import categories, product_record, tombstone_record
from deskgen.common.errors import InvalidInputError

PRODUCT = json.loads((Path(__file__).resolve().parents[3] / "stack" / "sample-catalogue.jsonl").read_text().splitlines()[0])


def test_an_upsert_is_a_cloudevent_keyed_by_the_product_id():
    record = product_record(PRODUCT)
    headers = dict(record.headers)
    assert record.key == PRODUCT["id"].encode() and headers["ce_subject"] == PRODUCT["id"].encode()
    assert headers["ce_type"] == b"com.deskgen.product.upserted"
    assert events.decode(record.value, record.headers, "product").data == PRODUCT


@pytest.mark.parametrize(("change", "where"), [
    ({"category": "toaster"}, "category"), ({"price": {"amount": -1, "currency": "EUR"}}, "price/amount"),
    ({"url": "javascript:alert(1)"}, "url"), ({"id": "../x"}, "id"), ({"available": "yes"}, "available")])
def test_a_product_that_breaks_the_schema_is_refused_naming_the_field(change, where):
    with pytest.raises(InvalidInputError) as caught:
        product_record({**PRODUCT, **change})
    assert caught.value.reason == "event_invalid" and where in caught.value.detail


def test_a_tombstone_has_a_null_value_and_a_checked_key():
    assert (tombstone_record("KEY-1").key, tombstone_record("KEY-1").value) == (b"KEY-1", None)
    with pytest.raises(InvalidInputError, match="product_id_invalid"):
        tombstone_record("../../etc")


def test_every_category_has_words_or_imagenet_classes():
    assert len(categories()) >= 12
    assert all(c.words or c.imagenet for c in categories().values())

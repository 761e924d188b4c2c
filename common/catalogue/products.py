"""Products on Kafka: the catalogue topic's records, the category vocabulary, publishing.

Topic ``<prefix>products`` (``cleanup.policy=compact``): key = product id, value = a CloudEvent
``com.deskgen.product.upserted`` whose data is one product (``schemas/product.json``); a record
with a null value (a tombstone) deletes the product. Compaction keeps the latest record per id, so
replaying the topic from the beginning rebuilds the catalogue (a table, ``common/tables.py``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any, Iterable

from .. import events
from ..errors import InvalidInputError
from ..records import DECODE_REASONS
from ..settings import KafkaSettings, RuntimeSettings
from ..tables import FEED_REASONS
from ..tables import publish as publish_rows

__all__ = ["Category", "categories", "product_record", "tombstone_record", "publish", "decode_product",
           "PRODUCT_REASONS", "DLQ_REASONS"]

# Why ``decode_product`` refuses a record; with the feed's own reasons, every DLQ reason of the catalogue.
PRODUCT_REASONS = (*DECODE_REASONS, "product_key_mismatch")
DLQ_REASONS = (*FEED_REASONS, *PRODUCT_REASONS)
_PRODUCT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SOURCE = "/deskgen/catalogue"


@dataclass(frozen=True)
class Category:
    """A product category: the caption objects and the ImageNet classes that stand for it."""

    name: str
    words: tuple[str, ...]
    imagenet: tuple[str, ...]


@cache
def categories() -> dict[str, Category]:
    """The controlled vocabulary (``categories.json``), checked against the product schema's enum."""
    data = json.loads((files("deskgen.common") / "categories.json").read_text())["categories"]
    schema = json.loads((files("deskgen.common") / "schemas" / "product.json").read_text())
    if sorted(data) != sorted(schema["$defs"]["category"]["enum"]):
        raise ValueError("categories.json and schemas/product.json name different categories")
    return {name: Category(name, tuple(c["words"]), tuple(c["imagenet"])) for name, c in data.items()}


def product_record(product: dict[str, Any], *, source: str = _SOURCE) -> events.Record:
    """The Kafka record of an upsert; InvalidInputError(event_invalid) if it breaks the schema."""
    return events.encode("product", product, source=source, key=str(product.get("id", "")))


def decode_product(key: str, value: bytes, headers: list[tuple[str, bytes]] | None) -> dict[str, Any]:
    """The product of an upsert record keyed ``key``; InvalidInputError with one of ``PRODUCT_REASONS``."""
    product = events.decode(value, headers, "product").data
    if product["id"] != key:
        raise InvalidInputError("product_key_mismatch", f"key {key!r:.70} but id {product['id']!r:.70}",
                                status="failed")
    return product


def tombstone_record(product_id: str) -> events.Record:
    """The Kafka record that deletes ``product_id`` (null value); InvalidInputError for a malformed id."""
    if not _PRODUCT_ID.fullmatch(product_id):
        raise InvalidInputError("product_id_invalid", f"{product_id!r:.80} is not a product id "
                                "(letters, digits, '_', '.', '-'; at most 64)")
    return events.Record("product", product_id.encode(), None, [])


def publish(kafka: KafkaSettings, runtime: RuntimeSettings, records: Iterable[events.Record],
            timeout: float = 60.0) -> int:
    """Produce ``records`` to the catalogue topic (``tables.publish``); returns how many were sent."""
    return publish_rows(kafka, runtime.topic(events.CATALOGUE_KIND), records, timeout)

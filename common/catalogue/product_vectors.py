"""Product vectors on Kafka: each product's embedding, computed once where products are published.

Topic ``<prefix>product-vectors`` (``cleanup.policy=compact``, created by ``deskgen topics create`` beside
``<prefix>products``): key = product id, value = the unit vector as little-endian float16 (``dim`` × 2 bytes);
headers name what made it:

- ``embedder``: the embedder's identity (model URI, digest of its weights, token limit; ``SentenceEmbedder.identity``)
- ``dim``: the vector's length; ``dtype``: ``float16`` (``float32`` is read too)
- ``text-sha256``: SHA-256 (hex) of the product text it embeds (``product_text``), so a vector of an older
  version of the product is recognised and not used

A null value (a tombstone) deletes the vector; ``deskgen products delete`` tombstones both topics. A replica
replays this topic before the products (``tables.Tables`` replays a stage's tables in order), then embeds only
the products whose vector is missing, made by another embedder or of another text.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError
from ..events import Record
from ..tables import Change, Table

if TYPE_CHECKING:
    from .index import Catalogue

__all__ = ["VECTORS_KIND", "VECTOR_REASONS", "ProductVector", "ProductVectors", "product_text", "text_digest",
           "vector_record", "vector_tombstone", "decode_vector"]

VECTORS_KIND = "product-vectors"
VECTOR_REASONS = ("vector_invalid",)
_DTYPES = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}
_DIGEST = re.compile(r"[0-9a-f]{64}")


def product_text(product: dict[str, Any]) -> str:
    """What a product's embedding is made of: category, brand, name, sub-category, tags, description."""
    parts = [f"{product['category']}: {product['brand']} {product['name']}"]
    if product.get("sub_category"):
        parts.append(product["sub_category"])
    if product.get("tags"):
        parts.append(", ".join(product["tags"]))
    if product.get("description"):
        parts.append(product["description"])
    return ". ".join(parts)


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class ProductVector:
    """One decoded vector record: ``vector`` as float32, made by ``embedder`` from the text with ``text_sha256``."""

    embedder: str
    text_sha256: str
    vector: np.ndarray

    @property
    def dim(self) -> int:
        return len(self.vector)


def vector_record(product_id: str, text: str, vector: np.ndarray, embedder: str) -> Record:
    """The record of ``product_id``'s vector (stored as float16) of ``text``, made by ``embedder``."""
    headers = [("embedder", embedder.encode()), ("dim", str(len(vector)).encode()), ("dtype", b"float16"),
               ("text-sha256", text_digest(text).encode())]
    return Record(VECTORS_KIND, product_id.encode(), np.asarray(vector, dtype="<f2").tobytes(), headers)


def vector_tombstone(product_id: str) -> Record:
    return Record(VECTORS_KIND, product_id.encode(), None, [])  # a null value deletes


def decode_vector(key: str, value: bytes, headers: list[tuple[str, bytes]] | None) -> ProductVector:
    """A vector record's content; InvalidInputError(vector_invalid) naming what is wrong."""
    fields = {name: raw.decode("utf-8", "replace") for name, raw in headers or [] if raw is not None}
    missing = [name for name in ("embedder", "dim", "dtype", "text-sha256") if not fields.get(name)]
    if missing:
        raise _invalid(key, f"headers {', '.join(missing)} missing")
    dtype = _DTYPES.get(fields["dtype"])
    if dtype is None:
        raise _invalid(key, f"dtype {fields['dtype']!r:.20} is not one of {', '.join(_DTYPES)}")
    if not fields["dim"].isdigit() or not 0 < int(fields["dim"]) <= 4096:
        raise _invalid(key, f"dim {fields['dim']!r:.20} is not a length from 1 to 4096")
    if len(value) != int(fields["dim"]) * dtype.itemsize:
        raise _invalid(key, f"{len(value)} bytes, not {fields['dim']} {fields['dtype']} values")
    if not _DIGEST.fullmatch(fields["text-sha256"]):
        raise _invalid(key, "text-sha256 is not 64 lowercase hex digits")
    vector = np.frombuffer(value, dtype=dtype).astype(np.float32)
    if not np.isfinite(vector).all():
        raise _invalid(key, "the vector has values that are not finite")
    return ProductVector(fields["embedder"], fields["text-sha256"], vector)


def _invalid(key: str, detail: str) -> InvalidInputError:
    return InvalidInputError("vector_invalid", f"vector of {key!r:.70}: {detail}", status="failed")


class ProductVectors(Table):
    """The vectors topic as a table: it feeds its catalogue (``Catalogue.apply_vectors``), listed before it."""

    name = "product-vectors"
    kind = VECTORS_KIND
    reasons = VECTOR_REASONS

    def __init__(self, catalogue: Catalogue):
        self.catalogue = catalogue
        self.catchup_timeout_s = catalogue.catchup_timeout_s

    def decode(self, key: str, value: bytes, headers: list[tuple[str, bytes]] | None) -> ProductVector:
        return decode_vector(key, value, headers)

    def apply(self, changes: list[Change]) -> None:
        self.catalogue.apply_vectors(changes)

"""The catalogue as a table: products by id, one vector index per category.

A ``tables.Table``: the runtime's feed replays and follows the products topic into ``apply`` (a batch of
changes at a time, on the feed's thread); the captioner's recommender reads it (``best``), and so does
``deskgen products search`` (``search``). Only available products are indexed, so an unavailable product
can never be recommended; it stays in ``products``.

Vectors come from the product-vectors topic (``product_vectors.py``), which the runtime replays first
(``tables``: ``(catalogue.vector_table, catalogue)``): a product is embedded here only when no published vector
of this embedder matches its text. A vector published after its product replaces the one embedded here,
so every replica searches the same vectors.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .. import events, metrics
from ..tables import Change, Table
from .product_vectors import ProductVector, ProductVectors, product_text, text_digest
from .products import PRODUCT_REASONS, categories, decode_product
from .vectors import VectorIndex

if TYPE_CHECKING:
    from .embedder import SentenceEmbedder

__all__ = ["Catalogue", "product_text"]

log = logging.getLogger("deskgen.catalogue")


class Catalogue(Table):
    """Thread-safe: the feeds write, the stage reads.

    Args:
        stage: the service holding it (metric label).
        exact_below: a category with at most this many available products is searched exhaustively
            (``VectorIndex``).
    Attributes:
        vector_table: the product-vectors table that feeds this catalogue; a stage lists it before the catalogue.
        embedded: how many products this replica embedded itself (no usable published vector).
    """

    name = "catalogue"
    kind = events.CATALOGUE_KIND
    reasons = PRODUCT_REASONS

    def __init__(self, embedder: SentenceEmbedder, *, stage: str = "captioner", catchup_timeout_s: float = 600.0,
                 exact_below: int = 4096):
        self.embedder, self.stage, self.exact_below = embedder, stage, exact_below
        self.catchup_timeout_s = catchup_timeout_s
        self.products: dict[str, dict[str, Any]] = {}
        self.vector_table = ProductVectors(self)
        self.embedded = 0
        self._published: dict[str, ProductVector] = {}  # this embedder's vectors from the topic, by product id
        self._local: set[str] = set()  # indexed products whose vector was embedded here
        self._indexes: dict[str, VectorIndex] = {}
        self._lock = threading.RLock()
        self._report()

    def load(self, state_dir: Path | None = None) -> None:
        self.embedder.load()
        self._indexes = {name: VectorIndex(self.embedder.dim, exact_below=self.exact_below) for name in categories()}
        self._report()

    def decode(self, key: str, value: bytes, headers: list[tuple[str, bytes]] | None) -> dict[str, Any]:
        return decode_product(key, value, headers)

    @property
    def available(self) -> int:
        return sum(len(index) for index in self._indexes.values())

    def apply(self, changes: list[Change]) -> None:
        """Upserts and deletes in order (the last change of an id wins); unknown deletes do nothing."""
        latest = {change.key: change.value for change in changes}
        wanted = [p for p in latest.values() if p is not None and p["available"]]
        vectors, local = self._vectors_of(wanted)
        with self._lock:
            for pid, product in latest.items():
                old = self.products.pop(pid, None)
                if old is not None:
                    self._indexes[old["category"]].remove(pid)
                    self._local.discard(pid)
                if product is not None:
                    self.products[pid] = product
            self._local.update(local)
            self._index(wanted, vectors)
        self._report()

    def apply_vectors(self, changes: list[Change]) -> None:
        """Published vectors (the product-vectors table's changes): kept when made by this embedder; one that
        matches an indexed product's text replaces the vector embedded here."""
        replace = []
        with self._lock:
            for change in changes:
                vector: ProductVector | None = change.value
                if vector is None or vector.embedder != self.embedder.identity or vector.dim != self.embedder.dim:
                    self._published.pop(change.key, None)  # deleted, or another embedder's: embed it here
                    continue
                self._published[change.key] = vector
                product = self.products.get(change.key)
                if change.key in self._local and product is not None and \
                        text_digest(product_text(product)) == vector.text_sha256:
                    replace.append(product)
            if replace:
                self._local.difference_update(p["id"] for p in replace)
                self._index(replace, np.stack([self._published[p["id"]].vector for p in replace]))

    def _vectors_of(self, products: list[dict[str, Any]]) -> tuple[np.ndarray, list[str]]:
        """Each product's published vector if its text matches, else embedded here (rounded to float16 like a
        published one); and the ids embedded here."""
        vectors = np.empty((len(products), self.embedder.dim), dtype=np.float32)
        missing, texts = [], []
        with self._lock:
            for row, product in enumerate(products):
                text = product_text(product)
                published = self._published.get(product["id"])
                if published is not None and published.text_sha256 == text_digest(text):
                    vectors[row] = published.vector
                else:
                    missing.append(row)
                    texts.append(text)
        if missing:
            vectors[missing] = self.embedder.encode(texts).astype("<f2")
            self.embedded += len(missing)
            log.info("%s: embedded %d products here (no published vector of %s for their text)", self.stage,
                     len(missing), self.embedder.identity)
        return vectors, [products[row]["id"] for row in missing]

    def _index(self, products: list[dict[str, Any]], vectors: np.ndarray) -> None:
        by_category: dict[str, list[int]] = {}
        for row, product in enumerate(products):
            by_category.setdefault(product["category"], []).append(row)
        for category, rows in by_category.items():
            self._indexes[category].add([products[r]["id"] for r in rows], vectors[rows])

    def best(self, category: str, query: np.ndarray, k: int = 1,
             keep: Callable[[dict[str, Any]], bool] | None = None) -> list[tuple[float, dict[str, Any]]]:
        """The ``k`` available products of ``category`` most similar to ``query`` (score, product); with
        ``keep``, only products it accepts (the search widens until ``k`` are kept or the category is spent)."""
        with self._lock:
            index = self._indexes.get(category)
            wanted = k
            while index is not None:
                hits = [(score, self.products[pid]) for pid, score in index.search(query, wanted)]
                kept = [hit for hit in hits if keep is None or keep(hit[1])]
                if len(kept) >= k or wanted >= len(index):
                    return kept[:k]
                wanted *= 4
            return []

    def vectors(self, products: list[dict[str, Any]]) -> np.ndarray:
        """The unit vectors the index holds for ``products`` (rows in their order; embedded if not indexed)."""
        with self._lock:
            held = [self._indexes[p["category"]].get(p["id"]) for p in products]
        missing = [row for row, vector in enumerate(held) if vector is None]
        embedded = iter(self.embedder.encode([product_text(products[row]) for row in missing]) if missing else ())
        out = [vector if vector is not None else next(embedded) for vector in held]
        return np.stack(out) if out else np.empty((0, self.embedder.dim), dtype=np.float32)

    def search(self, text: str, k: int = 10) -> list[tuple[float, dict[str, Any]]]:
        """The ``k`` available products most similar to ``text``, any category."""
        query = self.embedder.encode([text])[0]
        with self._lock:
            hits = [hit for category in self._indexes for hit in self.best(category, query, k)]
        return sorted(hits, key=lambda h: (-h[0], h[1]["id"]))[:k]

    def _report(self) -> None:
        available = self.available
        metrics.CATALOGUE_SIZE.labels(self.stage, "available").set(available)
        metrics.CATALOGUE_SIZE.labels(self.stage, "unavailable").set(len(self.products) - available)


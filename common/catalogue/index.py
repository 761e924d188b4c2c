"""The catalogue as a table: products by id, one vector index per category.

A ``tables.Table``: the runtime's feed replays and follows the products topic into ``apply`` (a batch of
changes at a time, on the feed's thread); the captioner's recommender reads it (``best``), and so does
``deskgen products search`` (``search``). Only available products are indexed, so an unavailable product
can never be recommended; it stays in ``products``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .. import events, metrics
from ..tables import Change, Table
from .products import PRODUCT_REASONS, categories, decode_product
from .vectors import EmbeddingCache, VectorIndex

if TYPE_CHECKING:
    from .embedder import SentenceEmbedder

__all__ = ["Catalogue", "product_text"]


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


class Catalogue(Table):
    """Thread-safe: the feed writes, the stage reads.

    Args:
        cache_dir: the embedding cache's folder; by default ``embeddings`` in the runtime's state folder.
        stage: the service holding it (metric label).
    """

    name = "catalogue"
    kind = events.CATALOGUE_KIND
    reasons = PRODUCT_REASONS

    def __init__(self, embedder: SentenceEmbedder, *, cache_dir: Path | None = None, stage: str = "captioner",
                 catchup_timeout_s: float = 600.0):
        self.embedder, self.cache_dir, self.stage = embedder, cache_dir, stage
        self.catchup_timeout_s = catchup_timeout_s
        self.products: dict[str, dict[str, Any]] = {}
        self._indexes: dict[str, VectorIndex] = {}
        self._cache: EmbeddingCache | None = None
        self._lock = threading.RLock()
        self._report()

    def load(self, state_dir: Path | None = None) -> None:
        self.embedder.load()
        folder = self.cache_dir or (state_dir / "embeddings" if state_dir is not None else None)
        self._cache = EmbeddingCache(self.embedder.name, self.embedder.dim, folder)
        self._indexes = {name: VectorIndex(self.embedder.dim) for name in categories()}
        self._report()

    def decode(self, key: str, value: bytes, headers: list[tuple[str, bytes]] | None) -> dict[str, Any]:
        return decode_product(key, value, headers)

    @property
    def available(self) -> int:
        return sum(len(index) for index in self._indexes.values())

    def apply(self, changes: list[Change]) -> None:
        """Upserts and deletes in order (the last change of an id wins); unknown deletes do nothing."""
        latest = {change.key: change.value for change in changes}
        wanted = {pid: product_text(p) for pid, p in latest.items() if p is not None and p["available"]}
        vectors = self._embed(list(wanted.values()))
        with self._lock:
            for pid, product in latest.items():
                old = self.products.pop(pid, None)
                if old is not None:
                    self._indexes[old["category"]].remove(pid)
                if product is not None:
                    self.products[pid] = product
            by_category: dict[str, list[int]] = {}
            ids = list(wanted)
            for row, pid in enumerate(ids):
                by_category.setdefault(latest[pid]["category"], []).append(row)
            for category, rows in by_category.items():
                self._indexes[category].add([ids[r] for r in rows], vectors[rows])
        self._report()

    def _embed(self, texts: list[str]) -> np.ndarray:
        keys = [self._cache.key(t) for t in texts]
        missing = {k: t for k, t in zip(keys, texts) if self._cache.get(k) is None}
        if missing:
            self._cache.put(list(missing), self.embedder.encode(list(missing.values())))
        if not texts:
            return np.empty((0, self.embedder.dim), dtype=np.float32)
        return np.stack([self._cache.get(k) for k in keys])

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
        """The unit vectors the index holds for ``products`` (rows in their order)."""
        return self._embed([product_text(p) for p in products])

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


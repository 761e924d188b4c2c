"""The embedded vector index behind the catalogue.

``VectorIndex``: an HNSW index from usearch (inner product over unit vectors = cosine), keyed by
string ids. Chosen by ``tests/bench/bench_catalogue.py`` (docs/benchmarks.md). Small indexes are
searched exhaustively (``exact``), so every replica gets the same answer whatever order it built
its graph in; large ones approximately, then ties are broken by id.
"""

from __future__ import annotations

import numpy as np
from usearch.index import Index

__all__ = ["VectorIndex"]


class VectorIndex:
    """Unit vectors by string id: add (replaces), remove, top-k by cosine similarity."""

    def __init__(self, dim: int, *, exact_below: int = 4096, connectivity: int = 16, expansion_add: int = 128,
                 expansion_search: int = 64):
        self.dim, self.exact_below = dim, exact_below
        self._index = Index(ndim=dim, metric="ip", dtype="f32", connectivity=connectivity,
                            expansion_add=expansion_add, expansion_search=expansion_search)
        self._label: dict[str, int] = {}
        self._id: dict[int, str] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._label)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._label

    def add(self, ids: list[str], vectors: np.ndarray) -> None:
        """Insert or replace ``ids`` (unique) with the rows of ``vectors``."""
        for item_id in ids:
            self.remove(item_id)
        labels = np.arange(self._next, self._next + len(ids), dtype=np.uint64)
        self._next += len(ids)
        for item_id, label in zip(ids, labels.tolist()):
            self._label[item_id], self._id[label] = label, item_id
        if ids:
            self._index.add(labels, np.ascontiguousarray(vectors, dtype=np.float32), threads=1)

    def get(self, item_id: str) -> np.ndarray | None:
        """The vector held for ``item_id`` (float32), or None."""
        label = self._label.get(item_id)
        return None if label is None else np.asarray(self._index.get(label, dtype=np.float32), dtype=np.float32)

    def remove(self, item_id: str) -> bool:
        label = self._label.pop(item_id, None)
        if label is None:
            return False
        del self._id[label]
        self._index.remove(label)
        return True

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Up to ``k`` (id, cosine similarity), best first; equal scores in id order."""
        if not self._label or k <= 0:
            return []
        exact = len(self._label) <= self.exact_below
        matches = self._index.search(np.ascontiguousarray(vector, dtype=np.float32), min(k, len(self._label)),
                                     exact=exact, threads=1)
        found = [(self._id[int(key)], round(1.0 - float(distance), 6))
                 for key, distance in zip(matches.keys, matches.distances) if int(key) in self._id]
        return sorted(found, key=lambda hit: (-hit[1], hit[0]))

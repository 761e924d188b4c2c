"""The embedded vector index and the embedding cache behind the catalogue.

``VectorIndex``: an HNSW index from usearch (inner product over unit vectors = cosine), keyed by
string ids. Chosen by ``tests/bench/bench_catalogue.py`` (docs/benchmarks.md). Small indexes are
searched exhaustively (``exact``), so every replica gets the same answer whatever order it built
its graph in; large ones approximately, then ties are broken by id.

``EmbeddingCache``: an append-only file of (SHA-256 of model + text, vector). Replaying 100k
products costs a hash and a lookup per product instead of a forward pass, so a restarted replica
catches up in seconds; only texts it has never seen are embedded.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
from usearch.index import Index

__all__ = ["VectorIndex", "EmbeddingCache"]

log = logging.getLogger("deskgen.catalogue.vectors")


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


class EmbeddingCache:
    """Embeddings of texts under one model, kept in memory and appended to ``folder`` (if given)."""

    def __init__(self, model: str, dim: int, folder: Path | None):
        self.dim = dim
        self._salt = model.encode() + b"\0"
        self._vectors: dict[bytes, np.ndarray] = {}
        self._file = None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"embeddings-{hashlib.sha256(self._salt).hexdigest()[:16]}-{dim}.bin"
            self._load(path)
            self._file = path.open("ab")

    def _load(self, path: Path) -> None:
        if not path.exists():
            return
        row = np.dtype([("key", "S32"), ("vector", "<f4", (self.dim,))])
        raw = path.read_bytes()
        usable = len(raw) - len(raw) % row.itemsize  # a torn last record (crash mid-write) is dropped
        if usable != len(raw):
            with path.open("r+b") as handle:
                handle.truncate(usable)
        table = np.frombuffer(raw[:usable], dtype=row)
        self._vectors = dict(zip(table["key"].tolist(), table["vector"]))
        log.info("embedding cache %s: %d vectors", path, len(self._vectors))

    def key(self, text: str) -> bytes:
        return hashlib.sha256(self._salt + text.encode()).digest()

    def get(self, key: bytes) -> np.ndarray | None:
        return self._vectors.get(key)

    def put(self, keys: list[bytes], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        for key, vector in zip(keys, vectors):
            self._vectors[key] = vector
        if self._file is not None and keys:
            self._file.write(b"".join(key + vector.tobytes() for key, vector in zip(keys, vectors)))
            self._file.flush()
            os.fsync(self._file.fileno())

    def __len__(self) -> int:
        return len(self._vectors)

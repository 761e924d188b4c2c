"""The captioner's copy of the product catalogue: products by id, one vector index per category.

Fed by ``common.catalogue.CatalogueFeed`` (a batch of changes at a time, on the feed's thread) and
read by the stage (``best``) and ``deskgen products search`` (``search``). Only available products
are indexed, so an unavailable product can never be recommended; it stays in ``products``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from deskgen.common import metrics
from deskgen.common.catalogue import Change, categories

from .embedder import SentenceEmbedder
from .vectors import EmbeddingCache, VectorIndex

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


class Catalogue:
    """Thread-safe: the feed writes, the stage reads."""

    def __init__(self, embedder: SentenceEmbedder, *, cache_dir: Path | None = None, stage: str = "captioner"):
        self.embedder, self.cache_dir, self.stage = embedder, cache_dir, stage
        self.products: dict[str, dict[str, Any]] = {}
        self._indexes: dict[str, VectorIndex] = {}
        self._cache: EmbeddingCache | None = None
        self._lock = threading.RLock()

    def load(self) -> None:
        self.embedder.load()
        self._cache = EmbeddingCache(self.embedder.name, self.embedder.dim, self.cache_dir)
        self._indexes = {name: VectorIndex(self.embedder.dim) for name in categories()}
        self._report()

    @property
    def available(self) -> int:
        return sum(len(index) for index in self._indexes.values())

    def apply(self, changes: list[Change]) -> None:
        """Upserts and deletes in order (the last change of an id wins); unknown deletes do nothing."""
        latest = {change.product_id: change.product for change in changes}
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

    def best(self, category: str, query: np.ndarray, k: int = 1) -> list[tuple[float, dict[str, Any]]]:
        """The ``k`` available products of ``category`` most similar to ``query`` (score, product)."""
        with self._lock:
            index = self._indexes.get(category)
            hits = index.search(query, k) if index is not None else []
            return [(score, self.products[pid]) for pid, score in hits]

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


def cli(argv: list[str]) -> int:
    """``deskgen products load FILE.jsonl | delete ID | search TEXT``."""
    import argparse
    import json
    import sys

    from deskgen.common.catalogue import CatalogueFeed, product_record, publish, tombstone_record
    from deskgen.common.errors import FatalError, InvalidInputError
    from deskgen.common.settings import KafkaSettings, RuntimeSettings, load

    parser = argparse.ArgumentParser(prog="deskgen products", description="the product catalogue topic")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    load_ = actions.add_parser("load", help="publish every product of a JSON Lines file (one product per line)")
    load_.add_argument("file", type=Path)
    delete = actions.add_parser("delete", help="publish a tombstone for a product id")
    delete.add_argument("id")
    search = actions.add_parser("search", help="replay the catalogue and print the closest available products")
    search.add_argument("text")
    search.add_argument("-k", type=int, default=10)
    args = parser.parse_args(argv)
    kafka, runtime = load(KafkaSettings), load(RuntimeSettings)
    if args.action == "load":
        if not args.file.is_file():
            raise FatalError(f"{args.file}: no such file")
        records, problems = [], []
        for number, line in enumerate(args.file.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(product_record(json.loads(line), source="/deskgen/cli"))
            except (ValueError, InvalidInputError) as exc:
                problems.append(f"{args.file}:{number}: {exc}")
        if problems:  # all or nothing: a file with a bad line publishes nothing
            raise FatalError(f"{len(problems)} invalid product(s), nothing published:\n  " + "\n  ".join(problems[:20]))
        print(f"published {publish(kafka, runtime, records)} products to {runtime.topic('products')}")
    elif args.action == "delete":
        try:
            publish(kafka, runtime, [tombstone_record(args.id)])
        except InvalidInputError as exc:
            raise FatalError(str(exc)) from None
        print(f"deleted {args.id} (tombstone published)")
    else:
        catalogue = Catalogue(SentenceEmbedder(), cache_dir=None, stage="cli")
        catalogue.load()
        feed = CatalogueFeed(kafka, runtime, catalogue.apply, stage="cli")
        feed.start()
        try:
            feed.wait()
        finally:
            feed.close()
        for score, product in catalogue.search(args.text, args.k):
            price = product["price"]
            print(f"{score:.3f}  {product['id']:<16} {product['category']:<12} {product['brand']} {product['name']}"
                  f"  {price['amount']:.2f} {price['currency']}  {product['shop']}", file=sys.stdout)
    return 0

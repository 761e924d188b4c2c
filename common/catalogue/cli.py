"""``deskgen products load FILE.jsonl | delete ID | index | search TEXT``: the catalogue topics from a shell.

``load`` embeds the products and publishes their vectors (``<prefix>product-vectors``), then the products, so
a captioner replica replays vectors instead of embedding. ``index`` is the indexer for products published by
other means: it replays both topics, publishes the vectors that are missing or stale (another embedder, another
text) and tombstones the vectors of deleted products.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import FatalError, InvalidInputError
from ..events import Record
from ..models import ModelSources
from ..settings import KafkaSettings, RuntimeSettings, load
from ..tables import Change, Table, publish as publish_rows, replay
from .embedder import DEFAULT_EMBEDDER_URI, SentenceEmbedder
from .product_vectors import (VECTORS_KIND, ProductVector, decode_vector, product_text, text_digest, vector_record,
                              vector_tombstone)
from .products import decode_product, product_record, publish, tombstone_record

__all__ = ["cli"]


def cli(argv: list[str]) -> int:
    """Run ``deskgen products ARGV``; returns the exit code. Raises FatalError with what to fix."""
    parser = argparse.ArgumentParser(prog="deskgen products", description="the product catalogue topics")
    parser.add_argument("--embedder", default=DEFAULT_EMBEDDER_URI, metavar="URI",
                        help="the sentence embedder of the vectors: the captioners' DESKGEN_CAPTIONER_EMBEDDER "
                             "(default: %(default)s)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    load_ = actions.add_parser("load", help="publish every product of a JSON Lines file (one product per line) "
                                            "and its vector")
    load_.add_argument("file", type=Path)
    delete = actions.add_parser("delete", help="publish a tombstone for a product id and its vector")
    delete.add_argument("id")
    actions.add_parser("index", help="publish the vectors that are missing or stale, tombstone orphaned ones")
    search = actions.add_parser("search", help="replay the catalogue and print the closest available products")
    search.add_argument("text")
    search.add_argument("-k", type=int, default=10)
    args = parser.parse_args(argv)
    kafka, runtime = load(KafkaSettings), load(RuntimeSettings)
    embedder = SentenceEmbedder(args.embedder, sources=ModelSources.load())
    if args.action == "load":
        _load(args.file, embedder, kafka, runtime)
    elif args.action == "delete":
        try:
            publish(kafka, runtime, [tombstone_record(args.id)])
        except InvalidInputError as exc:
            raise FatalError(str(exc)) from None
        publish_rows(kafka, runtime.topic(VECTORS_KIND), [vector_tombstone(args.id)])
        print(f"deleted {args.id} (tombstones published)")
    elif args.action == "index":
        _index(embedder, kafka, runtime)
    else:
        _search(args.text, args.k, embedder, kafka, runtime)
    return 0


def _load(path: Path, embedder: SentenceEmbedder, kafka: KafkaSettings, runtime: RuntimeSettings) -> None:
    if not path.is_file():
        raise FatalError(f"{path}: no such file")
    products, records, problems = [], [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            product = json.loads(line)
            records.append(product_record(product, source="/deskgen/cli"))
            products.append(product)
        except (ValueError, InvalidInputError) as exc:
            problems.append(f"{path}:{number}: {exc}")
    if problems:  # all or nothing: a file with a bad line publishes nothing
        raise FatalError(f"{len(problems)} invalid product(s), nothing published:\n  " + "\n  ".join(problems[:20]))
    vectors = _vector_records(embedder, products)  # first, so a replica following both finds each product's vector
    print(f"published {publish_rows(kafka, runtime.topic(VECTORS_KIND), vectors)} vectors to "
          f"{runtime.topic(VECTORS_KIND)}")
    print(f"published {publish(kafka, runtime, records)} products to {runtime.topic('products')}")


def _vector_records(embedder: SentenceEmbedder, products: list[dict[str, Any]]) -> list[Record]:
    if not products:
        return []
    embedder.load()
    texts = [product_text(p) for p in products]
    return [vector_record(p["id"], text, vector, embedder.identity)
            for p, text, vector in zip(products, texts, embedder.encode(texts))]


class _Rows(Table):
    """A topic's latest rows by key (what the indexer compares)."""

    def __init__(self, name: str, kind: str, decode):
        self.name, self.kind, self._decode = name, kind, decode
        self.rows: dict[str, Any] = {}

    def decode(self, key: str, value: bytes, headers: list[tuple[str, bytes]] | None) -> Any:
        return self._decode(key, value, headers)

    def apply(self, changes: list[Change]) -> None:
        for change in changes:
            if change.value is None:
                self.rows.pop(change.key, None)
            else:
                self.rows[change.key] = change.value


def _index(embedder: SentenceEmbedder, kafka: KafkaSettings, runtime: RuntimeSettings) -> None:
    embedder.load()
    products = _Rows("products", "products", decode_product)
    vectors = _Rows("product-vectors", VECTORS_KIND, decode_vector)
    replay(vectors, kafka, runtime)
    replay(products, kafka, runtime)

    def current(pid: str, product: dict[str, Any]) -> bool:
        vector: ProductVector | None = vectors.rows.get(pid)
        return (vector is not None and vector.embedder == embedder.identity and vector.dim == embedder.dim
                and vector.text_sha256 == text_digest(product_text(product)))

    stale = [product for pid, product in products.rows.items() if not current(pid, product)]
    orphans = [vector_tombstone(pid) for pid in vectors.rows if pid not in products.rows]
    sent = publish_rows(kafka, runtime.topic(VECTORS_KIND), _vector_records(embedder, stale) + orphans)
    print(f"{len(products.rows)} products: {len(stale)} vectors published, {len(orphans)} orphaned vectors "
          f"tombstoned ({sent} records to {runtime.topic(VECTORS_KIND)})")


def _search(text: str, k: int, embedder: SentenceEmbedder, kafka: KafkaSettings, runtime: RuntimeSettings) -> None:
    from .index import Catalogue

    catalogue = Catalogue(embedder, stage="cli")
    catalogue.load()
    replay(catalogue.vector_table, kafka, runtime)
    replay(catalogue, kafka, runtime)
    for score, product in catalogue.search(text, k):
        price = product["price"]
        print(f"{score:.3f}  {product['id']:<16} {product['category']:<12} {product['brand']} {product['name']}"
              f"  {price['amount']:.2f} {price['currency']}  {product['shop']}")

"""``deskgen products load FILE.jsonl | delete ID | search TEXT``: the catalogue topic from a shell."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import FatalError, InvalidInputError
from ..settings import KafkaSettings, RuntimeSettings, load
from ..tables import replay
from .products import product_record, publish, tombstone_record

__all__ = ["cli"]


def cli(argv: list[str]) -> int:
    """Run ``deskgen products ARGV``; returns the exit code. Raises FatalError with what to fix."""
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
        _load(args.file, kafka, runtime)
    elif args.action == "delete":
        try:
            publish(kafka, runtime, [tombstone_record(args.id)])
        except InvalidInputError as exc:
            raise FatalError(str(exc)) from None
        print(f"deleted {args.id} (tombstone published)")
    else:
        _search(args.text, args.k, kafka, runtime)
    return 0


def _load(path: Path, kafka: KafkaSettings, runtime: RuntimeSettings) -> None:
    if not path.is_file():
        raise FatalError(f"{path}: no such file")
    records, problems = [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(product_record(json.loads(line), source="/deskgen/cli"))
        except (ValueError, InvalidInputError) as exc:
            problems.append(f"{path}:{number}: {exc}")
    if problems:  # all or nothing: a file with a bad line publishes nothing
        raise FatalError(f"{len(problems)} invalid product(s), nothing published:\n  " + "\n  ".join(problems[:20]))
    print(f"published {publish(kafka, runtime, records)} products to {runtime.topic('products')}")


def _search(text: str, k: int, kafka: KafkaSettings, runtime: RuntimeSettings) -> None:
    from .embedder import SentenceEmbedder
    from .index import Catalogue

    catalogue = Catalogue(SentenceEmbedder(), stage="cli")
    catalogue.load()
    replay(catalogue, kafka, runtime)
    for score, product in catalogue.search(text, k):
        price = product["price"]
        print(f"{score:.3f}  {product['id']:<16} {product['category']:<12} {product['brand']} {product['name']}"
              f"  {price['amount']:.2f} {price['currency']}  {product['shop']}")

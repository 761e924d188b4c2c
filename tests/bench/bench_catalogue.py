"""The catalogue index: ANN libraries side by side, and the start-up catch-up of a replica.

Data: embedding 100k texts with all-MiniLM-L6-v2 on 2 CPU cores takes far longer than the run
should, so the index rows use vectors made from real embeddings: ``--base`` synthetic product texts
(category × brand × model × traits) embedded for real, then each synthetic product =
normalise(0.7·a + 0.3·b + 0.1·noise) of two random real embeddings a, b — clustered like a real
catalogue, not uniform noise (which would flatter nothing and mislead everything). Queries are
real embeddings of 300 shopper phrases. Recall@10 is against an exact numpy scan of the same
vectors.

Catch-up: ``--catchup`` products are published to a fresh compacted topic on the local broker,
then a ``TableFeed`` replays them into a ``Catalogue`` (schema validation, index build) with
the embedding cache warm (the restart of a replica); the cold cost (every product embedded) is
the measured embedding rate × the catalogue size.

    python tests/bench/bench_catalogue.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

import faiss
import hnswlib
import numpy as np
from usearch.index import Index

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "stack"), str(ROOT / "tests")]

import localstack  # noqa: E402
from make_catalogue import TABLE  # noqa: E402

from deskgen.common.catalogue import product_record, publish  # noqa: E402
from deskgen.common.catalogue.embedder import SentenceEmbedder  # noqa: E402
from deskgen.common.catalogue.index import Catalogue, product_text  # noqa: E402
from deskgen.common.catalogue.vectors import EmbeddingCache  # noqa: E402
from deskgen.common.kafka import create_topics  # noqa: E402
from deskgen.common.settings import KafkaSettings, RuntimeSettings, load  # noqa: E402
from deskgen.common.tables import TableFeed  # noqa: E402

K = 10


def synthetic_products(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    colours = ("black", "white", "grey", "oak", "walnut", "silver", "blue", "pink", "green", "beige")
    traits = ("compact", "wireless", "premium", "budget", "ergonomic", "rgb", "quiet", "portable", "heavy duty", "slim")
    out = []
    for i in range(n):
        category = rng.choice(list(TABLE))
        brands, models, (low, high) = TABLE[category]
        model, sub, tags, description = rng.choice(models)
        extra = rng.sample(traits, 2)
        out.append({"id": f"SYN-{i:07d}", "name": f"{' '.join(extra).title()} {model} {rng.randrange(100, 999)}",
                    "brand": rng.choice(brands), "category": category, "sub_category": sub,
                    "price": {"amount": round(rng.uniform(low, high), 2), "currency": "EUR"}, "shop": "Bench Shop",
                    "url": f"https://bench.example.com/p/{i}", "image": f"products/syn-{i}.jpg",
                    "tags": [*tags, rng.choice(colours), *extra], "description": description,
                    "available": rng.random() > 0.05})
    return out


QUERIES = [f"{adj} {thing}" for adj in ("a mechanical", "a quiet", "a white", "a wooden", "a cheap", "an ergonomic",
                                         "a wireless", "a big", "a small", "a gaming", "a minimalist", "a black",
                                         "a premium", "a portable", "a colourful")
           for thing in ("keyboard", "monitor", "mouse", "desk lamp", "office chair", "standing desk", "plant",
                         "speaker", "headphones", "webcam", "microphone", "shelf", "desk mat", "monitor arm",
                         "laptop stand", "laptop", "setup for streaming", "setup for coding", "4k screen", "lamp")]


def clustered(base: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(base), n), rng.integers(0, len(base), n)
    noise = rng.standard_normal((n, base.shape[1])).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    vectors = 0.7 * base[a] + 0.3 * base[b] + 0.1 * noise
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


class _Usearch:
    name = "usearch 2.26.6 (HNSW M=16, ef 128/64)"

    def build(self, vectors):
        self.index = Index(ndim=vectors.shape[1], metric="ip", dtype="f32", connectivity=16, expansion_add=128,
                           expansion_search=64)
        self.index.add(np.arange(len(vectors), dtype=np.uint64), vectors, threads=2)

    def query(self, q):
        return self.index.search(q, K, threads=1).keys

    def size(self):
        return len(self.index.save())


class _Hnswlib:
    name = "hnswlib 0.8.0 (HNSW M=16, ef 128/64)"

    def build(self, vectors):
        self.index = hnswlib.Index(space="ip", dim=vectors.shape[1])
        self.index.init_index(max_elements=len(vectors), M=16, ef_construction=128)
        self.index.add_items(vectors, np.arange(len(vectors)), num_threads=2)
        self.index.set_ef(64)
        self.index.set_num_threads(1)

    def query(self, q):
        return self.index.knn_query(q, K)[0][0]

    def size(self):
        return self.index.index_file_size()


class _Faiss:
    name = "faiss-cpu 1.15.1 (HNSW32, ef 128/64)"

    def build(self, vectors):
        faiss.omp_set_num_threads(2)
        self.index = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = 128
        self.index.add(vectors)
        self.index.hnsw.efSearch = 64
        faiss.omp_set_num_threads(1)

    def query(self, q):
        return self.index.search(q[None], K)[1][0]

    def size(self):
        return faiss.serialize_index(self.index).nbytes


def bench_index(library, vectors: np.ndarray, queries: np.ndarray, exact: np.ndarray) -> dict:
    started = time.perf_counter()
    library.build(vectors)
    build_s = time.perf_counter() - started
    memory = library.size()  # serialised index: vectors + graph, what it holds in memory
    for q in queries[:20]:
        library.query(q)
    times, recalls = [], []
    for q, truth in zip(queries, exact):
        t0 = time.perf_counter()
        found = library.query(q)
        times.append((time.perf_counter() - t0) * 1000)
        recalls.append(len(set(map(int, found)) & set(map(int, truth))) / K)
    times.sort()
    return {"library": library.name, "n": len(vectors), "build_per_s": len(vectors) / build_s,
            "p50_ms": statistics.median(times), "p99_ms": times[int(0.99 * (len(times) - 1))],
            "recall": statistics.mean(recalls), "mem_per_100k_mb": memory / len(vectors) * 100_000 / 2**20}


def exact_top(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    scores = queries @ vectors.T
    return np.argsort(-scores, axis=1)[:, :K]


def bench_catchup(products: list[dict], vectors: np.ndarray, embedder) -> dict:
    """Publish ``products``, then replay them into a Catalogue with a warm embedding cache."""

    os.environ.update({**localstack.deskgen_env(), "DESKGEN_TOPIC_PREFIX": f"bench{uuid.uuid4().hex[:8]}."})
    kafka, runtime = load(KafkaSettings), load(RuntimeSettings)
    create_topics(kafka, runtime, partitions=3, replication=1)
    started = time.perf_counter()
    publish(kafka, runtime, (product_record(p) for p in products))
    publish_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = EmbeddingCache(embedder.name, embedder.dim, Path(cache_dir))  # as a previous run left it
        cache.put([cache.key(product_text(p)) for p in products], vectors)
        del cache
        catalogue = Catalogue(embedder, cache_dir=Path(cache_dir), stage="bench")
        started = time.perf_counter()
        catalogue.load()
        feed = TableFeed(catalogue, kafka, runtime, stage="bench")
        feed.start()
        feed.wait()
        catchup_s = time.perf_counter() - started
        feed.close()
    return {"n": len(products), "publish_s": publish_s, "catchup_s": catchup_s, "held": len(catalogue.products)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k and 5k products, catch-up of 5k")
    parser.add_argument("--base", type=int, default=2000, help="real embeddings the synthetic vectors are made of")
    args = parser.parse_args()
    sizes = (1_000, 5_000) if args.quick else (10_000, 100_000)
    catchup_n = sizes[-1]

    import torch

    embedder = SentenceEmbedder()
    embedder.load()
    base_texts = [product_text(p) for p in synthetic_products(args.base, seed=7)]
    started = time.perf_counter()
    base = embedder.encode(base_texts)
    embed_rate = len(base_texts) / (time.perf_counter() - started)
    queries = embedder.encode(QUERIES)

    print(f"# catalogue benchmark — {date.today()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    print(f"embedding rate (all-MiniLM-L6-v2, batch 64, CPU): {embed_rate:.0f} products/s "
          f"→ a cold start embeds 100k products in ≈{100_000 / embed_rate / 60:.0f} min\n")
    print("| library | products | build (products/s) | query p50 (ms) | query p99 (ms) | recall@10 | memory per 100k (MB) |")
    print("|---|---|---|---|---|---|---|")
    for n in sizes:
        vectors = clustered(base, n)
        exact = exact_top(vectors, queries)
        for library in (_Usearch(), _Hnswlib(), _Faiss()):
            row = bench_index(library, vectors, queries, exact)
            print(f"| {row['library']} | {n:,} | {row['build_per_s']:,.0f} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} "
                  f"| {row['recall']:.3f} | {row['mem_per_100k_mb']:.0f} |", flush=True)
            del library

    products = synthetic_products(catchup_n)
    catch = bench_catchup(products, clustered(base, catchup_n), embedder)
    print("\n| catch-up | products | publish (s) | replay, warm embedding cache (s) | cold, every product embedded (s, estimated) |")
    print("|---|---|---|---|---|")
    print(f"| 3 partitions, local broker | {catch['n']:,} | {catch['publish_s']:.1f} | {catch['catchup_s']:.1f} "
          f"| ≈{catch['n'] / embed_rate:.0f} |")
    assert catch["held"] == catchup_n
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

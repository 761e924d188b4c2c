"""The catalogue: embedding backends side by side, a new replica's start at 10k and 100k products, search in the
captioner's configuration, and (``--libraries``) ANN libraries side by side.

Data: embedding 100k texts with all-MiniLM-L6-v2 on 2 CPU cores takes far longer than the run
should, so the index rows use vectors made from real embeddings: ``--base`` synthetic product texts
(category × brand × line × traits) embedded for real, then each synthetic product =
normalise(0.7·a + 0.3·b + 0.1·noise) of two random real embeddings a, b — clustered like a real
catalogue, not uniform noise (which would flatter nothing and mislead everything). Queries are
real embeddings of 300 shopper phrases. Recall@10 is against an exact numpy scan of the same
vectors.

Embedding: the same texts through torch and ONNX Runtime (rate, cosine agreement).

A new replica: the products and their vectors (what ``deskgen products load`` publishes) go to fresh compacted
topics on the local broker; then a captioner's catalogue starts as the runtime starts it — embedder loaded,
``Tables((vectors, catalogue))`` replayed — until it is ready (every product searchable); it must embed nothing.
Search: ``Catalogue.best(category, query, 10)`` on that replica (one index per category, exact up to
``exact_below`` products), recall@10 against an exact scan of the category's available products. On a shared
machine the CPU columns (this process's CPU time; the broker's is not counted) say what the wall-clock ones
would be alone.

    python tests/bench/bench_catalogue.py [--quick] [--libraries]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "stack"), str(ROOT / "tests")]

import localstack  # noqa: E402
from make_catalogue import TABLE  # noqa: E402

from deskgen.common.catalogue import product_record, publish  # noqa: E402
from deskgen.common.catalogue.embedder import SentenceEmbedder  # noqa: E402
from deskgen.common.catalogue.index import Catalogue  # noqa: E402
from deskgen.common.catalogue.product_vectors import VECTORS_KIND, product_text, vector_record  # noqa: E402
from deskgen.common.kafka import create_topics  # noqa: E402
from deskgen.common.settings import KafkaSettings, RuntimeSettings, load  # noqa: E402
from deskgen.common.tables import Tables, publish as publish_rows  # noqa: E402

K = 10


def synthetic_products(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    colours = ("black", "white", "grey", "oak", "walnut", "silver", "blue", "pink", "green", "beige")
    traits = ("compact", "wireless", "premium", "budget", "ergonomic", "rgb", "quiet", "portable", "heavy duty", "slim")
    out = []
    for i in range(n):
        category = rng.choice(list(TABLE))
        brand, line, sub, tags, description, eur = rng.choice(TABLE[category][0])
        extra = rng.sample(traits, 2)
        out.append({"id": f"SYN-{i:07d}", "name": f"{line} {' '.join(extra).title()} {rng.randrange(100, 999)}",
                    "brand": brand, "category": category, "sub_category": sub,
                    "price": {"amount": round(eur * rng.uniform(0.8, 1.3), 2), "currency": "EUR"},
                    "shop": "Bench Shop", "url": f"https://bench.example.com/p/{i}", "image": f"products/syn-{i}.jpg",
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
        from usearch.index import Index

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
        import hnswlib

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
        import faiss

        faiss.omp_set_num_threads(2)
        self.index = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = 128
        self.index.add(vectors)
        self.index.hnsw.efSearch = 64
        faiss.omp_set_num_threads(1)

    def query(self, q):
        return self.index.search(q[None], K)[1][0]

    def size(self):
        import faiss

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


def bench_embedders(texts: list[str], threads: int) -> tuple[list[dict], SentenceEmbedder]:
    """Each backend's rate on ``texts`` (after a warm-up batch) and its agreement with torch's vectors."""
    rows, reference, fastest = [], None, None
    for backend in ("torch", "onnxruntime"):
        embedder = SentenceEmbedder(backend=backend, threads=threads)
        started = time.perf_counter()
        embedder.load()
        load_s = time.perf_counter() - started
        embedder.encode(texts[:64])
        started = time.perf_counter()
        vectors = embedder.encode(texts)
        rate = len(texts) / (time.perf_counter() - started)
        reference = vectors if reference is None else reference
        cosine = np.sum(reference * vectors, axis=1)
        rows.append({"backend": backend, "rate": rate, "load_s": load_s, "min_cos": float(cosine.min()),
                     "mean_cos": float(cosine.mean())})
        if fastest is None or rate > fastest[0]:
            fastest = (rate, embedder)
    return rows, fastest[1]


def bench_replica(products: list[dict], vectors: np.ndarray, queries: np.ndarray, exact_below: int,
                  backend: str) -> dict:
    """Publish ``products`` and their vectors; time a new replica until ready; then search it per category."""
    os.environ.update({**localstack.deskgen_env(), "DESKGEN_TOPIC_PREFIX": f"bench{uuid.uuid4().hex[:8]}."})
    kafka, runtime = load(KafkaSettings), load(RuntimeSettings)
    create_topics(kafka, runtime, partitions=3, replication=1)
    embedder = SentenceEmbedder(backend=backend)
    embedder.load()  # the identity the published vectors carry (as `deskgen products load` writes them)
    started = time.perf_counter()
    publish_rows(kafka, runtime.topic(VECTORS_KIND),
                 (vector_record(p["id"], product_text(p), v, embedder.identity) for p, v in zip(products, vectors)))
    publish(kafka, runtime, (product_record(p) for p in products))
    publish_s = time.perf_counter() - started

    started, cpu = time.perf_counter(), time.process_time()  # a new replica: load the embedder, replay both
    catalogue = Catalogue(SentenceEmbedder(backend=backend), stage="bench", exact_below=exact_below)
    tables = Tables((catalogue.vector_table, catalogue), kafka, runtime, stage="bench")
    tables.start()
    tables.wait(threading.Event())
    ready_s, ready_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    assert tables.ready and len(catalogue.products) == len(products)
    tables.close()

    # search as the recommender does: one category's index, k=10; truth = exact scan of that category
    stored = {p["id"]: v for p, v in zip(products, vectors.astype("<f2").astype(np.float32))}
    by_category: dict[str, list[str]] = {}
    for p in products:
        if p["available"]:
            by_category.setdefault(p["category"], []).append(p["id"])
    times, cpu_times, recalls = [], [], []
    for category, ids in sorted(by_category.items()):
        matrix = np.stack([stored[i] for i in ids])
        for query in queries:
            truth = {ids[j] for j in np.argsort(-(matrix @ query))[:K]}
            t0, c0 = time.perf_counter(), time.thread_time()
            hits = catalogue.best(category, query, K)
            times.append((time.perf_counter() - t0) * 1000)
            cpu_times.append((time.thread_time() - c0) * 1000)
            recalls.append(len({p["id"] for _, p in hits} & truth) / min(K, len(ids)))
    times.sort()
    cpu_times.sort()
    sizes = [len(ids) for ids in by_category.values()]
    return {"n": len(products), "publish_s": publish_s, "ready_s": ready_s, "ready_cpu_s": ready_cpu_s,
            "embedded": catalogue.embedded, "per_category": (min(sizes), max(sizes)),
            "exact": all(s <= exact_below for s in sizes), "p50_ms": statistics.median(times),
            "p99_ms": times[int(0.99 * (len(times) - 1))], "p99_cpu_ms": cpu_times[int(0.99 * (len(times) - 1))],
            "recall": statistics.mean(recalls), "searches": len(times)}


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k and 5k products")
    parser.add_argument("--libraries", action="store_true", help="also the ANN libraries side by side")
    parser.add_argument("--base", type=int, default=2000, help="real embeddings the synthetic vectors are made of")
    parser.add_argument("--exact-below", type=int, default=4096,
                        help="the captioner's DESKGEN_CAPTIONER_CATALOGUE_EXACT_BELOW")
    args = parser.parse_args()
    sizes = (1_000, 5_000) if args.quick else (10_000, 100_000)
    threads = len(os.sched_getaffinity(0))

    print(f"# catalogue benchmark — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{platform.processor() or platform.machine()}, {threads} cores; load average before: {_load()}\n")
    base_texts = [product_text(p) for p in synthetic_products(args.base, seed=7)]
    rows, embedder = bench_embedders(base_texts, threads)
    print(f"| embedder backend ({threads} threads, batch 64, {len(base_texts):,} product texts) | products/s "
          "| load (s) | cosine vs torch: min | mean |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['backend']} | {row['rate']:.0f} | {row['load_s']:.1f} | {row['min_cos']:.6f} "
              f"| {row['mean_cos']:.6f} |")
    print(f"\nfaster: {embedder.backend}; a replica with no published vectors would embed 100k products in "
          f"≈{100_000 / max(r['rate'] for r in rows) / 60:.0f} min\n", flush=True)
    base = embedder.encode(base_texts)
    queries = embedder.encode(QUERIES)

    print(f"| new replica ({embedder.backend} embedder, exact below {args.exact_below:,} per category) | products "
          "| products per category | publish products + vectors (s) | ready (s) | ready, CPU (s) | products embedded "
          "| search p50 (ms) | search p99 (ms) | search p99, CPU (ms) | recall@10 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        row = bench_replica(synthetic_products(n), clustered(base, n), queries, args.exact_below, embedder.backend)
        low, high = row["per_category"]
        print(f"| {'exact' if row['exact'] else 'HNSW'} per category, 3 partitions | {n:,} | {low:,}–{high:,} "
              f"| {row['publish_s']:.1f} | {row['ready_s']:.1f} | {row['ready_cpu_s']:.1f} | {row['embedded']} "
              f"| {row['p50_ms']:.3f} | {row['p99_ms']:.3f} | {row['p99_cpu_ms']:.3f} | {row['recall']:.3f} |",
              flush=True)

    if args.libraries:
        print("\n| library | products | build (products/s) | query p50 (ms) | query p99 (ms) | recall@10 "
              "| memory per 100k (MB) |")
        print("|---|---|---|---|---|---|---|")
        for n in sizes:
            vectors = clustered(base, n)
            exact = exact_top(vectors, queries)
            for library in (_Usearch(), _Hnswlib(), _Faiss()):
                row = bench_index(library, vectors, queries, exact)
                print(f"| {row['library']} | {n:,} | {row['build_per_s']:,.0f} | {row['p50_ms']:.3f} "
                      f"| {row['p99_ms']:.3f} | {row['recall']:.3f} | {row['mem_per_100k_mb']:.0f} |", flush=True)
    print(f"\nload average after: {_load()} (above 2 means other processes shared the cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

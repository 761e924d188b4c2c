"""What the captioner recommends for, on real labelled desk photos: per-category precision and recall, and the CPU
time per photo, side by side for four category sets in one run.

    python tests/bench/bench_products.py [--photos tests/data/desk-photos] [--limit 5] [--min-score 0.25]

Photos and labels: ``provenance.json`` of the photo folder (objects read by eye from each photo, presence only).
Each photo goes through the service's code: ``load_photo`` (EXIF orientation, JPEG draft), the real
EfficientNet-Lite0 classifier (its desk decision and its ImageNet evidence), the real object detectors
(``common/detect``), and the captioner's ``recommend.desires`` with ``--limit`` categories (the captioner's
``DESKGEN_CAPTIONER_PRODUCTS_MAX``; one product per category). A photo the classifier rejects gets no products,
as in the pipeline. Captions are left out: offline they come from dev-random weights (noise).

Columns, per product category over the photos: ``labelled`` = photos showing it; then precision (P) and recall
(R) of four sets: ``detected`` = the raw detections, ``recommended`` = the categories the captioner recommends
for (classifier evidence + detections), ``ungated`` = the same had the classifier accepted every photo (the
captioner's own share), ``before`` = what it recommended for before detectors (classifier evidence only). Labels outside the product categories (mug, phone, book, pc_tower, tablet) are counted apart.
CPU time is process time per photo with one thread per model.

Variety (issue 21 item 3): each accepted photo's products from the sample catalogue (real MiniLM embeddings)
under every concept (one job each: job id = file name/concept): distinct product lists across photos per concept, and how
often a category's top product changes from one concept to the next on the same photo; side by side for three
rankings (similarity alone, maximal marginal relevance, MMR plus the per-job offset: the default), with the mean
cosine similarity of the chosen products to their queries (what the variety costs), and for the default under
a budget (the most one product may cost, in EUR: other currencies are left out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from deskgen.common.catalogue import categories
from deskgen.common.detect import DEFAULT_MIN_SCORE, DETECTORS, ObjectDetector, load_photo  # onnxruntime before usearch
from deskgen.services.captioner.prompts import concept_book
from deskgen.services.captioner.recommend import Preferences, Recommender, concept_style, desires
from deskgen.services.classifier.model import DeskClassifier

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "stack"), str(ROOT / "tests")]

# The photo labels' vocabulary → product category (identical names are not listed).
LABEL_CATEGORY = {"lamp": "desk lamp"}
SETS = ("detected", "recommended", "ungated", "before")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, default=ROOT / "tests" / "data" / "desk-photos")
    parser.add_argument("--limit", type=int, default=5, help="categories recommended per photo (products_max)")
    parser.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE, help="smallest detection score kept")
    parser.add_argument("--detector-dir", type=Path, default=ROOT / ".cache" / "detectors")
    args = parser.parse_args()
    torch.set_num_threads(1)
    photos = json.loads((args.photos / "provenance.json").read_text())
    classifier = DeskClassifier(threads=1)
    classifier.load()
    detectors = {name: ObjectDetector([name], args.detector_dir, min_score=args.min_score) for name in DETECTORS}
    both = ObjectDetector(list(DETECTORS), args.detector_dir, min_score=args.min_score)
    for detector in (*detectors.values(), both):
        detector.load()

    product_categories = set(categories())
    labelled: Counter[str] = Counter()
    outside: Counter[str] = Counter()
    chosen = {name: Counter() for name in SETS}
    correct = {name: Counter() for name in SETS}
    cpu = Counter()
    accepted = 0
    misses: list[str] = []
    jobs: list[tuple[str, list[dict], list[dict]]] = []  # (file, evidence, detections) of each accepted photo
    for photo in photos:
        truth = set()
        for label in photo["objects"]:
            category = LABEL_CATEGORY.get(label, label)
            (truth.add(category) if category in product_categories else outside.update([label]))
        labelled.update(truth)
        started = time.process_time()
        image = load_photo(args.photos / photo["file"])
        cpu["decode"] += time.process_time() - started
        started = time.process_time()
        score = classifier.score([image])[0]
        cpu["classifier"] += time.process_time() - started
        for name, detector in detectors.items():
            started = time.process_time()
            detector.detect(image)
            cpu[name] += time.process_time() - started
        found = [d.as_dict() for d in both.detect(image)]
        is_desk = score.score >= classifier.threshold
        accepted += is_desk
        if is_desk:
            jobs.append((photo["file"], score.evidence, found))
        asked = {d.category for d in desires([], [], score.evidence, found)[:args.limit]}
        sets = {
            "detected": {d["label"] for d in found},
            "recommended": asked if is_desk else set(),
            "ungated": asked,
            "before": {d.category for d in desires([], [], score.evidence)[:args.limit]} if is_desk else set(),
        }
        for name, categories_chosen in sets.items():
            chosen[name].update(categories_chosen)
            correct[name].update(categories_chosen & truth)
        missed = truth - sets["recommended"]
        if missed:
            misses.append(f"{photo['file']}: missed {', '.join(sorted(missed))}"
                          f"{'' if is_desk else ' (classifier: not a desk)'}")

    _print_table(labelled, chosen, correct, len(photos), accepted)
    if outside:
        print(f"\nLabels no product category covers (not counted): "
              f"{', '.join(f'{k} {v}' for k, v in sorted(outside.items()))}")
    print(f"\nCPU time per photo (ms, one thread each; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores):\n")
    print("| step | ms/photo |\n|---|---:|")
    for step in ("decode", "classifier", *DETECTORS):
        print(f"| {step} | {cpu[step] / len(photos) * 1000:.0f} |")
    print(f"| detectors together | {sum(cpu[n] for n in DETECTORS) / len(photos) * 1000:.0f} |")
    if misses:
        print("\nRecommended-for misses:\n" + "\n".join(f"  {line}" for line in misses))
    _print_variety(jobs, args.limit)
    return 0


RANKINGS = {"similarity alone": {"mmr_lambda": 1.0, "job_variety": 0.0},
            "MMR λ 0.7": {"mmr_lambda": 0.7, "job_variety": 0.0},
            "MMR λ 0.7 + job offset 0.02 (default)": {}}
BUDGET = {"amount": 200, "currency": "EUR"}


def _print_variety(jobs: list[tuple[str, list[dict], list[dict]]], limit: int) -> None:
    from support.catalogue import catalogue_of, embedder, sample_products

    catalogue = catalogue_of(embedder(), sample_products())
    book = concept_book()
    friday = "2026-11-27T09:30:00Z"
    styles = {concept: concept_style({"concept": concept}, friday, book) for concept in book.concepts}
    runs = {name: (Recommender(catalogue, limit=limit, **options), Preferences())
            for name, options in RANKINGS.items()}
    runs[f"default, budget {BUDGET['amount']} {BUDGET['currency']} per product"] = (
        Recommender(catalogue, limit=limit), Preferences.of({"budget": BUDGET}))
    print(f"\nVariety on the {len(jobs)} accepted photos × {len(styles)} concepts, sample catalogue "
          f"({len(sample_products())} products):\n")
    print("| ranking | distinct lists per concept (of photos) | distinct lists, all concepts | top product changes "
          "between concepts | mean similarity |\n|---|---:|---:|---:|---:|")
    per_concept_default: dict[str, int] = {}
    for name, (recommender, preferences) in runs.items():
        lists: dict[str, list[list[tuple[str, str]]]] = {concept: [] for concept in styles}
        scores: list[float] = []
        for concept, style in styles.items():
            for file, evidence, found in jobs:
                products = recommender.recommend([], [], evidence, found, style, preferences,
                                                 f"{file}/{concept}").products
                lists[concept].append([(p["category"], p["id"]) for p in products])
                scores += [p["score"] for p in products]
        distinct = {concept: len(set(map(tuple, per_photo))) for concept, per_photo in lists.items()}
        changed, compared = _top_changes(lists, len(jobs))
        together = len({tuple(ids) for per_photo in lists.values() for ids in per_photo})
        print(f"| {name} | {min(distinct.values())}–{max(distinct.values())} of {len(jobs)} | {together} of "
              f"{len(jobs) * len(styles)} | {_ratio(changed, compared)} of {compared} | "
              f"{sum(scores) / max(len(scores), 1):.3f} |")
        if name.endswith("(default)"):
            per_concept_default = distinct
    print("\nDistinct product lists per concept, default ranking:\n")
    print("| concept | distinct product lists |\n|---|---:|")
    for concept, count in per_concept_default.items():
        print(f"| {concept} | {count} of {len(jobs)} |")


def _top_changes(lists: dict[str, list[list[tuple[str, str]]]], photos: int) -> tuple[int, int]:
    """How often a category's top product differs between consecutive concepts on the same photo."""
    concepts = list(lists)
    changed = compared = 0
    for photo in range(photos):
        for a, b in zip(concepts, concepts[1:]):
            tops_a, tops_b = dict(lists[a][photo]), dict(lists[b][photo])
            for category in tops_a.keys() & tops_b.keys():
                compared += 1
                changed += tops_a[category] != tops_b[category]
    return changed, compared


def _ratio(part: int, whole: int) -> str:
    return f"{part / whole:.2f}" if whole else "–"


def _print_table(labelled: Counter, chosen: dict[str, Counter], correct: dict[str, Counter], photos: int,
                 accepted: int) -> None:
    print(f"{photos} photos, {accepted} accepted as desks by the classifier; P = precision, R = recall\n")
    print("| category | labelled | " + " | ".join(f"{s} P | {s} R" for s in SETS) + " |")
    print("|---|---:|" + "---:|---:|" * len(SETS))
    for category in sorted(set(labelled) | {c for s in SETS for c in chosen[s]}):
        cells = [f"{_ratio(correct[s][category], chosen[s][category])} | "
                 f"{_ratio(correct[s][category], labelled[category])}" for s in SETS]
        print(f"| {category} | {labelled[category]} | " + " | ".join(cells) + " |")
    total = sum(labelled.values())
    cells = [f"**{_ratio(sum(correct[s].values()), sum(chosen[s].values()))}** | "
             f"**{_ratio(sum(correct[s].values()), total)}**" for s in SETS]
    print(f"| **all** | {total} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())

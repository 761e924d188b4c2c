"""Shoppable results: the job's desired objects → the best available catalogue product for each.

Desired objects come from every real signal the job carries:
- the caption keywords (weight = captions that mention the object, as for the prompt), with the
  caption phrases that named them ("a mechanical keyboard") as the search query;
- the classifier's ImageNet evidence (real even offline): a label of a category with probability
  ``evidence_min`` or more adds that probability to the category's weight;
- the object detectors' detections (``common/detect``, real even offline; already named by category): a
  category seen adds its best detection score to its weight.

Categories are ordered by weight (then name); each gets its best available product (at most
``per_category``) by cosine similarity between the query "<category>, <phrases>, <style>" and the product's
text, until ``limit`` products are chosen; ``style`` is the job's concept in words (``concept_style``), so
the same desk gets other products under another concept. No brand is chosen twice in one job (the next
best product of another brand stands in). Deterministic: the same job gets the same products. Each carries
its score and the words that chose it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

from deskgen.common import metrics
from deskgen.common.catalogue import categories
from deskgen.common.catalogue.embedder import SentenceEmbedder
from deskgen.common.catalogue.index import Catalogue
from deskgen.common.models import ModelSources

from .keywords import Keyword, objects_in, split_items, strip_echo
from .prompts import ConceptBook, select_concept
from .settings import CaptionerSettings

__all__ = ["Desire", "Recommendation", "Recommender", "build_recommender", "concept_style", "desires",
           "products_phrase"]

_FIELDS = ("id", "name", "brand", "category", "sub_category", "price", "shop", "url", "image")
_BRAND_RESERVE = 8  # candidates beyond per_category, so a category can skip brands already chosen


@dataclass(frozen=True)
class Desire:
    category: str
    weight: float
    words: tuple[str, ...]
    phrases: tuple[str, ...]

    @property
    def query(self) -> str:
        return ", ".join((self.category, *self.phrases))


@dataclass(frozen=True)
class Recommendation:
    products: list[dict[str, Any]]
    note: str | None
    ms: float


def desires(captions: list[tuple[str, str]], keywords: list[Keyword], evidence: list[dict[str, Any]],
            detections: Sequence[dict[str, Any]] = (), *, evidence_min: float = 0.05) -> list[Desire]:
    """The categories the job asks for, heaviest first."""
    by_word = {word: c.name for c in categories().values() for word in c.words}
    by_label = {label: c.name for c in categories().values() for label in c.imagenet}
    by_name = categories()
    weight: dict[str, float] = {}
    words: dict[str, list[str]] = {}
    phrases: dict[str, list[str]] = {}
    for keyword in keywords:
        category = by_word.get(keyword.word)
        if category:
            weight[category] = weight.get(category, 0.0) + keyword.count
            words.setdefault(category, []).append(keyword.word)
    for prompt, text in captions:
        for item in split_items(strip_echo(text, prompt)):
            for obj in objects_in(item):
                category = by_word.get(obj)
                phrase = " ".join(item)
                if category and phrase not in phrases.setdefault(category, []):
                    phrases[category].append(phrase)
    for entry in evidence:
        category = by_label.get(entry.get("label"))
        if category and entry.get("prob", 0.0) >= evidence_min:
            weight[category] = weight.get(category, 0.0) + float(entry["prob"])
            words.setdefault(category, []).append(f"imagenet:{entry['label']}")
    best_seen: dict[str, float] = {}
    for detection in detections:
        if detection["label"] in by_name:
            best_seen[detection["label"]] = max(best_seen.get(detection["label"], 0.0), float(detection["score"]))
    for category, score in best_seen.items():
        weight[category] = weight.get(category, 0.0) + score
        words.setdefault(category, []).append(f"detected:{category}")
    order = sorted(weight, key=lambda c: (-weight[c], c))
    return [Desire(c, round(weight[c], 6), tuple(words[c]), tuple(phrases.get(c, ())[:4])) for c in order]


def concept_style(request: dict[str, Any], uploaded_at: str, book: ConceptBook) -> str:
    """The job's concept in words: its template without the object slot, WEEKDAY's theme filled in."""
    concept, theme = select_concept(request, uploaded_at, book)
    words = concept.template.format(objects="", theme=book.weekday_themes[theme] if theme else "")
    return ", ".join(part.strip().removesuffix(" with") for part in words.split(",") if part.strip())


def products_phrase(products: list[dict[str, Any]]) -> str:
    """Plain words for the prompt, brand and category: "a Keychron keyboard and a Dell monitor" (short:
    SDXL's text encoders read 77 tokens, and the template's style words come after the objects)."""
    names = [f"a {p['brand']} {p['category']}" for p in products]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1] if names else ""


class Recommender:
    """Picks each job's products from the catalogue, a table the runtime loads, replays and keeps following
    (the stage declares it in ``tables``): by the first job it holds the whole topic."""

    def __init__(self, catalogue: Catalogue, *, limit: int = 5, per_category: int = 1, evidence_min: float = 0.05):
        self.catalogue = catalogue
        self.limit, self.per_category, self.evidence_min = limit, per_category, evidence_min
        metrics.RECOMMEND.labels(catalogue.stage)  # the series exists before the first recommendation

    def recommend(self, captions: list[tuple[str, str]], keywords: list[Keyword], evidence: list[dict[str, Any]],
                  detections: Sequence[dict[str, Any]] = (), style: str = "") -> Recommendation:
        started = time.perf_counter()
        wanted = desires(captions, keywords, evidence, detections, evidence_min=self.evidence_min)
        chosen: list[dict[str, Any]] = []
        note = None
        if not self.catalogue.products:
            note = "the catalogue is empty"
        elif not wanted:
            note = "no desk object recognised in the captions, the classifier's evidence or the detections"
        else:
            queries = self.catalogue.embedder.encode([", ".join(filter(None, (d.query, style))) for d in wanted])
            brands: set[str] = set()
            for desire, query in zip(wanted, queries):
                taken = 0
                for score, product in self.catalogue.best(desire.category, query, self.per_category + _BRAND_RESERVE):
                    if taken == self.per_category or len(chosen) == self.limit:
                        break
                    if product["brand"] not in brands:
                        brands.add(product["brand"])
                        taken += 1
                        chosen.append({**{f: product[f] for f in _FIELDS if f in product}, "score": score,
                                       "words": list(dict.fromkeys((*desire.words, *desire.phrases)))[:16]})
            if not chosen:
                note = f"no available product in the desired categories ({', '.join(d.category for d in wanted)})"
        elapsed = time.perf_counter() - started
        metrics.RECOMMEND.labels(self.catalogue.stage).observe(elapsed)
        return Recommendation(chosen, note, elapsed * 1000)


def build_recommender(settings: CaptionerSettings) -> Recommender | None:
    """The recommender and its catalogue (not loaded: the runtime loads and feeds it), or None when
    recommendations are off."""
    if not settings.catalogue:
        return None
    catalogue = Catalogue(SentenceEmbedder(settings.embedder, sources=ModelSources.load()),
                          cache_dir=settings.embedding_cache, catchup_timeout_s=settings.catalogue_catchup_timeout_s)
    return Recommender(catalogue, limit=settings.products_max, per_category=settings.products_per_category,
                       evidence_min=settings.products_evidence_min)

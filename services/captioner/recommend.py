"""Shoppable results: the job's desired objects → the best available catalogue product for each.

Desired objects come from every real signal the job carries:
- the caption keywords (weight = captions that mention the object, as for the prompt), with the
  caption phrases that named them ("a mechanical keyboard") as the search query;
- the classifier's ImageNet evidence (real even offline): a label of a category with probability
  ``evidence_min`` or more adds that probability to the category's weight;
- the object detectors' detections (``common/detect``, real even offline; already named by category): a
  category seen adds its best detection score to its weight.

The request narrows them (``Preferences``): ``request.categories.exclude`` drops categories;
``request.categories.include`` keeps only its categories and adds those the photo does not show, after the
seen ones (words ``requested:<category>``); ``request.budget`` keeps only products priced in its currency at
or below its amount (no exchange rates, so other currencies are left out).

Categories are ordered by weight (then name); each gets at most ``per_category`` products, until ``limit``
are chosen. Its ``candidates`` products most similar (cosine) to the query "<category>, <phrases>, <style>"
(``style``: the job's concept in words, ``concept_style``, so the same desk gets other products under another
concept) that fit the budget and whose brand the job has not chosen yet (no brand twice) are ranked by
maximal marginal relevance: each pick maximises ``mmr_lambda`` × relevance − (1 − ``mmr_lambda``) × its
highest cosine similarity to any product already chosen for the job. Relevance is the cosine similarity plus a
per-job offset in [0, ``job_variety``) drawn from a hash of the job id and product id, so near-ties go
different ways for different jobs. Deterministic: the same job gets the same products. Each carries its
score (the cosine similarity) and the words that chose it.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from deskgen.common import metrics
from deskgen.common.catalogue import categories
from deskgen.common.catalogue.embedder import SentenceEmbedder
from deskgen.common.catalogue.index import Catalogue
from deskgen.common.errors import InvalidInputError
from deskgen.common.models import ModelSources

from .keywords import Keyword, objects_in, split_items, strip_echo
from .prompts import ConceptBook, select_concept
from .settings import CaptionerSettings

__all__ = ["Desire", "Preferences", "Recommendation", "Recommender", "build_recommender", "concept_style",
           "desires", "job_offset", "mmr_order", "products_phrase"]

_FIELDS = ("id", "name", "brand", "category", "sub_category", "price", "shop", "url", "image")


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
class Preferences:
    """What the request asks of its products (``request.categories``, ``request.budget``; schema-checked)."""

    include: tuple[str, ...] = ()
    exclude: frozenset[str] = frozenset()
    budget: tuple[float, str] | None = None  # (amount, currency): the most one product may cost

    @classmethod
    def of(cls, request: dict[str, Any]) -> "Preferences":
        """Raises InvalidInputError(categories_conflict) when a category is both included and excluded."""
        chosen = request.get("categories") or {}
        include, exclude = tuple(chosen.get("include", ())), frozenset(chosen.get("exclude", ()))
        if both := sorted(exclude.intersection(include)):
            raise InvalidInputError("categories_conflict",
                                    f"request.categories both includes and excludes {', '.join(both)}")
        budget = request.get("budget")
        return cls(include, exclude, (float(budget["amount"]), budget["currency"]) if budget else None)

    def affordable(self, product: dict[str, Any]) -> bool:
        if self.budget is None:
            return True
        amount, currency = self.budget
        return product["price"]["currency"] == currency and product["price"]["amount"] <= amount

    def focus(self, wanted: list[Desire]) -> list[Desire]:
        """The desired categories the request allows: with ``include`` only those, the seen ones first, then
        the unseen ones in its order; never an excluded one."""
        if self.include:
            seen = {d.category for d in wanted}
            wanted = ([d for d in wanted if d.category in self.include] +
                      [Desire(c, 0.0, (f"requested:{c}",), ()) for c in self.include if c not in seen])
        return [d for d in wanted if d.category not in self.exclude]

    def describe_budget(self) -> str:
        return f" within {self.budget[0]:g} {self.budget[1]}" if self.budget else ""


def job_offset(job_id: str, product_id: str, scale: float) -> float:
    """A per-job relevance offset in [0, scale): the same (job, product) always gets the same one."""
    if not job_id or scale <= 0:
        return 0.0
    digest = hashlib.blake2b(f"{job_id}\0{product_id}".encode(), digest_size=8).digest()
    return scale * int.from_bytes(digest, "big") / 2 ** 64


def mmr_order(relevance: Sequence[float], vectors: np.ndarray, chosen: np.ndarray, brands: Sequence[str],
              taken_brands: set[str], n: int, mmr_lambda: float) -> list[int]:
    """Up to ``n`` candidate indices by maximal marginal relevance: each pick maximises ``mmr_lambda`` ×
    relevance − (1 − ``mmr_lambda``) × its highest cosine similarity to ``chosen`` and the picks so far
    (unit vectors, rows); a candidate whose brand is in ``taken_brands`` or already picked is skipped.
    Equal values go to the lower index. Adds the picked brands to ``taken_brands``."""
    picked: list[int] = []
    others = [row for row in chosen]
    while len(picked) < n:
        best, best_value = -1, -np.inf
        for i, score in enumerate(relevance):
            if brands[i] in taken_brands:
                continue
            redundancy = max((float(vectors[i] @ other) for other in others), default=0.0)
            value = mmr_lambda * score - (1 - mmr_lambda) * redundancy
            if value > best_value:
                best, best_value = i, value
        if best < 0:
            break
        picked.append(best)
        taken_brands.add(brands[best])
        others.append(vectors[best])
    return picked


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

    def __init__(self, catalogue: Catalogue, *, limit: int = 5, per_category: int = 1, evidence_min: float = 0.05,
                 candidates: int = 8, mmr_lambda: float = 0.7, job_variety: float = 0.02):
        self.catalogue = catalogue
        self.limit, self.per_category, self.evidence_min = limit, per_category, evidence_min
        self.candidates, self.mmr_lambda, self.job_variety = max(candidates, per_category), mmr_lambda, job_variety
        metrics.RECOMMEND.labels(catalogue.stage)  # the series exists before the first recommendation

    def recommend(self, captions: list[tuple[str, str]], keywords: list[Keyword], evidence: list[dict[str, Any]],
                  detections: Sequence[dict[str, Any]] = (), style: str = "", preferences: Preferences = Preferences(),
                  job_id: str = "") -> Recommendation:
        started = time.perf_counter()
        seen = desires(captions, keywords, evidence, detections, evidence_min=self.evidence_min)
        wanted = preferences.focus(seen)
        chosen: list[dict[str, Any]] = []
        note = None
        if not self.catalogue.products:
            note = "the catalogue is empty"
        elif not seen and not wanted:
            note = "no desk object recognised in the captions, the classifier's evidence or the detections"
        elif not wanted:
            note = f"request.categories leaves out every desired category ({', '.join(d.category for d in seen)})"
        else:
            chosen = self._choose(wanted, style, preferences, job_id)
            if not chosen:
                note = (f"no available product{preferences.describe_budget()} in the desired categories "
                        f"({', '.join(d.category for d in wanted)})")
        elapsed = time.perf_counter() - started
        metrics.RECOMMEND.labels(self.catalogue.stage).observe(elapsed)
        return Recommendation(chosen, note, elapsed * 1000)

    def _choose(self, wanted: list[Desire], style: str, preferences: Preferences, job_id: str) -> list[dict[str, Any]]:
        queries = self.catalogue.embedder.encode([", ".join(filter(None, (d.query, style))) for d in wanted])
        brands: set[str] = set()
        chosen: list[dict[str, Any]] = []
        chosen_vectors = np.empty((0, queries.shape[1]), dtype=np.float32)
        for desire, query in zip(wanted, queries):
            room = min(self.per_category, self.limit - len(chosen))
            if room <= 0:
                break
            hits = self.catalogue.best(desire.category, query, self.candidates,
                                       keep=lambda p: p["brand"] not in brands and preferences.affordable(p))
            if not hits:
                continue
            vectors = self.catalogue.vectors([product for _, product in hits])
            relevance = [score + job_offset(job_id, product["id"], self.job_variety) for score, product in hits]
            for i in mmr_order(relevance, vectors, chosen_vectors, [p["brand"] for _, p in hits], brands, room,
                               self.mmr_lambda):
                score, product = hits[i]
                chosen.append({**{f: product[f] for f in _FIELDS if f in product}, "score": score,
                               "words": list(dict.fromkeys((*desire.words, *desire.phrases)))[:16]})
                chosen_vectors = np.vstack([chosen_vectors, vectors[i]])
        return chosen


def build_recommender(settings: CaptionerSettings) -> Recommender | None:
    """The recommender and its catalogue (not loaded: the runtime loads and feeds it), or None when
    recommendations are off."""
    if not settings.catalogue:
        return None
    embedder = SentenceEmbedder(settings.embedder, backend=settings.embedder_backend, threads=settings.threads,
                                sources=ModelSources.load())
    catalogue = Catalogue(embedder, catchup_timeout_s=settings.catalogue_catchup_timeout_s,
                          exact_below=settings.catalogue_exact_below)
    return Recommender(catalogue, limit=settings.products_max, per_category=settings.products_per_category,
                       evidence_min=settings.products_evidence_min, candidates=settings.products_candidates,
                       mmr_lambda=settings.products_mmr_lambda, job_variety=settings.products_job_variety)

"""Weighted objects + the job's concept → the generator's prompt, negative prompt and preset.

Template (``concepts.json``): each concept has one positive template with ``{objects}`` (and
``{theme}`` for WEEKDAY). The object phrase carries the weights by order and grouping, in plain
words, because plain diffusers pipelines do not parse A1111 ``(word:1.3)`` syntax (they would feed
the brackets and numbers to the text encoder as text):

- objects are ordered by weight (captions that mention them), heaviest first — CLIP text encoders
  give earlier tokens more influence;
- the objects with the top weight form the lead group, the rest follow after ", plus":
  ``laptop, keyboard and monitor, plus computer and mouse``;
- at most ``max_objects`` objects; none recognised → ``objects_fallback`` (a generic desk).

Negative prompt: the seed's list, minus the terms a concept's own style contradicts (CARTOON drops
"cartoon" and "anime", OIL drops "painting", MSPAINT drops "cartoon", "painting" and "sketch").

WEEKDAY's theme is chosen from the weekday of the job's ``uploaded_at`` (in the timestamp's own UTC
offset), never from the clock, so a replay builds the same prompt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from deskgen.common.errors import FatalError, InvalidInputError

from deskgen.services.captioner.keywords import Keyword

__all__ = ["Concept", "ConceptBook", "PromptPlan", "concept_book", "objects_phrase", "weekday_of",
           "select_concept", "build_prompt"]

_CONCEPTS_FILE = Path(__file__).with_name("concepts.json")
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class Concept:
    name: str
    preset: str
    template: str
    drop_negative: tuple[str, ...]


@dataclass(frozen=True)
class ConceptBook:
    concepts: dict[str, Concept]
    default_concept: str
    negative_terms: tuple[str, ...]
    objects_fallback: str
    max_objects: int
    weekday_themes: dict[str, str]

    @classmethod
    def from_file(cls, path: Path) -> "ConceptBook":
        data = json.loads(path.read_text())
        negative = tuple(data["negative_prompt"])
        concepts = {name: Concept(name, c["preset"], c["template"], tuple(c["drop_negative"]))
                    for name, c in data["concepts"].items()}
        book = cls(concepts, data["default_concept"], negative, data["objects_fallback"],
                   data["max_objects"], data["weekday_themes"])
        book._check(path.name)
        return book

    def _check(self, source: str) -> None:
        problems = []
        if self.default_concept not in self.concepts:
            problems.append(f"default concept {self.default_concept!r} is not defined")
        if sorted(self.weekday_themes) != sorted(_WEEKDAYS):
            problems.append("weekday_themes must name the seven days")
        for concept in self.concepts.values():
            if "{objects}" not in concept.template:
                problems.append(f"{concept.name}: template lacks {{objects}}")
            if ("{theme}" in concept.template) != (concept.name == "WEEKDAY"):
                problems.append(f"{concept.name}: only WEEKDAY's template has {{theme}}")
            problems += [f"{concept.name}: {t!r} is not a negative term"
                         for t in concept.drop_negative if t not in self.negative_terms]
        if problems:
            raise FatalError(f"{source}: " + "; ".join(problems))

    def concept(self, name: str | None) -> Concept:
        """The named concept (default when ``None``); InvalidInputError(unknown_concept) otherwise."""
        name = self.default_concept if name is None else name
        if name not in self.concepts:
            raise InvalidInputError("unknown_concept", f"{name!r:.40} is not one of {sorted(self.concepts)}",
                                    status="rejected")
        return self.concepts[name]

    def negative_prompt(self, concept: Concept) -> str:
        return ", ".join(t for t in self.negative_terms if t not in concept.drop_negative)


@lru_cache(maxsize=1)
def concept_book() -> ConceptBook:
    """The packaged concepts and templates, read and checked once."""
    return ConceptBook.from_file(_CONCEPTS_FILE)


@dataclass(frozen=True)
class PromptPlan:
    prompt: str
    negative_prompt: str
    preset: str
    concept: str
    theme: str | None


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def objects_phrase(keywords: list[Keyword], max_objects: int, fallback: str) -> str:
    """``lead[, plus rest]`` from keywords ordered heaviest first (see the module docstring)."""
    kept = keywords[:max_objects]
    if not kept:
        return fallback
    top = max(k.count for k in kept)
    lead = [k.word for k in kept if k.count == top]
    rest = [k.word for k in kept if k.count != top]
    return _join(lead) + (f", plus {_join(rest)}" if rest else "")


def weekday_of(uploaded_at: str) -> str:
    """Lower-case English weekday of an RFC 3339 timestamp, in its own offset."""
    try:
        moment = datetime.fromisoformat(uploaded_at)
    except (TypeError, ValueError):
        raise InvalidInputError("invalid_uploaded_at", f"{uploaded_at!r:.60} is not an RFC 3339 timestamp",
                                status="failed") from None
    return _WEEKDAYS[moment.weekday()]


def select_concept(request: dict[str, Any], uploaded_at: str,
                   book: ConceptBook | None = None) -> tuple[Concept, str | None]:
    """The job's concept and, for WEEKDAY, its weekday. Raises InvalidInputError
    (``unknown_concept``; ``invalid_uploaded_at`` when WEEKDAY cannot read the timestamp)."""
    book = book or concept_book()
    concept = book.concept(request.get("concept"))
    return concept, weekday_of(uploaded_at) if "{theme}" in concept.template else None


def build_prompt(keywords: list[Keyword], request: dict[str, Any], uploaded_at: str,
                 book: ConceptBook | None = None, featuring: str = "") -> PromptPlan:
    """The generation plan for one job; ``featuring`` (the chosen products in plain words) follows
    the object phrase. Raises as ``select_concept`` does."""
    book = book or concept_book()
    concept, theme = select_concept(request, uploaded_at, book)
    objects = objects_phrase(keywords, book.max_objects, book.objects_fallback)
    prompt = concept.template.format(
        objects=f"{objects}, featuring {featuring}" if featuring else objects,
        theme=book.weekday_themes[theme] if theme else "",
    )
    return PromptPlan(prompt=prompt, negative_prompt=book.negative_prompt(concept),
                      preset=request.get("preset") or concept.preset, concept=concept.name, theme=theme)

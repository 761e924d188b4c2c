"""The captioner stage: a desk photo → captions → weighted objects → the generator's prompt."""

from __future__ import annotations

from deskgen.common.events import Event
from deskgen.common.models import ModelSources
from deskgen.common.stage import Blobs, Emit, Stage
from deskgen.services.captioner.keywords import extract_keywords
from deskgen.services.captioner.model import BlipCaptioner
from deskgen.services.captioner.prompts import ConceptBook, build_prompt, concept_book, select_concept
from deskgen.services.captioner.recommend import Recommender, build_recommender, products_phrase
from deskgen.services.captioner.settings import CaptionerSettings

__all__ = ["CaptionerStage", "build_stage", "build_captioner"]


def build_captioner(settings: CaptionerSettings) -> BlipCaptioner:
    """The captioner the settings describe (not loaded yet)."""
    return BlipCaptioner(settings.model, settings.prompts, max_new_tokens=settings.max_new_tokens,
                         num_beams=settings.num_beams, precision=settings.precision, device=settings.device,
                         sources=ModelSources.load())


def build_stage(settings: CaptionerSettings) -> CaptionerStage:
    return CaptionerStage(build_captioner(settings), recommender=build_recommender(settings))


class CaptionerStage(Stage):
    """Consumes ``classified`` (desk photos), produces ``captioned`` with the ``captioning`` section.

    Section: ``captions`` [{prompt, text}], ``keywords`` [{word, count}], ``prompt``,
    ``negative_prompt``, ``preset``, ``concept``, ``theme`` (WEEKDAY's day, else null), ``model``
    {name, version, uri}, ``weights`` (``real`` | ``dev-random``), ``timings`` (ms) and, with a
    recommender, ``products`` (``recommend.py``; named in the prompt) and ``products_note`` (why
    there are none, else null). With a recommender its catalogue is the stage's one table.
    """

    name = "captioner"

    def __init__(self, captioner: BlipCaptioner, concepts: ConceptBook | None = None,
                 recommender: Recommender | None = None):
        self.captioner = captioner
        self.concepts = concepts or concept_book()
        self.recommender = recommender
        self.tables = (recommender.catalogue,) if recommender is not None else ()

    def load(self) -> None:
        self.captioner.load()

    def handle(self, event: Event, blobs: Blobs) -> Emit:
        data = event.data
        request = data.get("request") or {}
        select_concept(request, data["uploaded_at"], self.concepts)  # a bad request fails before BLIP runs
        result = self.captioner.caption(blobs.image(data["image_key"]))
        captions = [(c.prompt, c.text) for c in result.captions]
        keywords = extract_keywords(captions)
        shop = {}
        if self.recommender is not None:
            picked = self.recommender.recommend(captions, keywords, (data.get("classification") or {}).get("evidence", []))
            shop = {"products": picked.products, "products_note": picked.note}
            result.timings["recommend"] = picked.ms
        plan = build_prompt(keywords, request, data["uploaded_at"], self.concepts,
                            featuring=products_phrase(shop.get("products", [])))
        return Emit(section={
            "captions": [{"prompt": c.prompt, "text": c.text} for c in result.captions],
            "keywords": [{"word": k.word, "count": k.count} for k in keywords],
            "prompt": plan.prompt,
            "negative_prompt": plan.negative_prompt,
            "preset": plan.preset,
            "concept": plan.concept,
            "theme": plan.theme,
            "model": dict(self.captioner.card),
            "weights": self.captioner.weights,
            "timings": {name: round(ms, 2) for name, ms in result.timings.items()},
            **shop,
        })

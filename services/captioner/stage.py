"""The captioner stage: a desk photo → captions → weighted objects → the generator's prompt."""

from __future__ import annotations

import logging

from PIL import Image

from deskgen.common.detect import ObjectDetector  # first: it imports onnxruntime before recommend's usearch
from deskgen.common import metrics
from deskgen.common.events import Event
from deskgen.common.models import ModelSources
from deskgen.common.settings import RuntimeSettings, load
from deskgen.common.stage import Blobs, Emit, Stage
from deskgen.services.captioner.keywords import extract_keywords
from deskgen.services.captioner.model import BlipCaptioner, CaptionResult
from deskgen.services.captioner.prompts import ConceptBook, build_prompt, concept_book, select_concept
from deskgen.services.captioner.recommend import (Preferences, Recommender, build_recommender, concept_style,
                                                   products_phrase)
from deskgen.services.captioner.settings import CaptionerSettings

__all__ = ["CaptionerStage", "build_stage", "build_captioner"]

log = logging.getLogger("deskgen.captioner")


def build_captioner(settings: CaptionerSettings) -> BlipCaptioner:
    """The captioner the settings describe (not loaded yet)."""
    onnx_cache = settings.onnx_cache or load(RuntimeSettings).state_dir / "captioner-onnx"
    return BlipCaptioner(settings.model, settings.prompts, max_new_tokens=settings.max_new_tokens,
                         num_beams=settings.num_beams, precision=settings.precision, device=settings.device,
                         backend=settings.backend, onnx_cache=onnx_cache, threads=settings.threads,
                         sources=ModelSources.load())


def build_stage(settings: CaptionerSettings) -> CaptionerStage:
    detector = (ObjectDetector(settings.detectors, settings.detector_dir, min_score=settings.detect_min_score)
                if settings.detectors else None)
    return CaptionerStage(build_captioner(settings), recommender=build_recommender(settings),
                          batch_max=settings.batch_max, detector=detector)


class CaptionerStage(Stage):
    """Consumes ``classified`` (desk photos), produces ``captioned`` with the ``captioning`` section.

    Section: ``captions`` [{prompt, text}], ``keywords`` [{word, count}], ``prompt``,
    ``negative_prompt``, ``preset``, ``concept``, ``theme`` (WEEKDAY's day, else null), ``model``
    {name, version, uri}, ``weights`` (``real`` | ``dev-random``), ``timings`` (ms) and, with a
    recommender, ``products`` (``recommend.py``; named in the prompt; narrowed by ``request.categories``
    and ``request.budget``) and ``products_note`` (why there are none, else null). With a recommender
    its tables are the catalogue's product vectors, then the catalogue. With a detector, ``detections``
    [{label, score, box, model}] (``common/detect``), also evidence for products.
    """

    name = "captioner"

    def __init__(self, captioner: BlipCaptioner, concepts: ConceptBook | None = None,
                 recommender: Recommender | None = None, batch_max: int = 1, detector: ObjectDetector | None = None):
        self.captioner = captioner
        self.detector = detector
        self.batch_max = batch_max
        self.concepts = concepts or concept_book()
        self.recommender = recommender
        catalogue = recommender.catalogue if recommender is not None else None
        self.tables = (catalogue.vector_table, catalogue) if catalogue is not None else ()

    def load(self) -> None:
        captioner = self.captioner
        captioner.load()
        metrics.CAPTIONER_BACKEND.labels(self.name, captioner.backend, captioner.precision, captioner.isa).set(1)
        log.info("captioner: BLIP on %s, %s (chosen for %s), batches of up to %d photos", captioner.backend,
                 captioner.precision, captioner.isa, self.batch_max)
        if self.detector is not None:
            self.detector.load()

    def handle(self, event: Event, blobs: Blobs) -> Emit:
        outcome = self.handle_batch([event], blobs)[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def handle_batch(self, events: list[Event], blobs: Blobs) -> list[Emit | Exception]:
        """Every event's photo captioned in one batch; a bad request or photo gets its error in its own slot
        (checked before BLIP runs) and the others are captioned without it."""
        outcomes: list[Emit | Exception | None] = [None] * len(events)
        images, slots = [], []
        for slot, event in enumerate(events):
            try:
                select_concept(event.data.get("request") or {}, event.data["uploaded_at"], self.concepts)
                Preferences.of(event.data.get("request") or {})
                images.append(blobs.image(event.data["image_key"]))
                slots.append(slot)
            except Exception as exc:  # its own outcome (the runtime's policy), not the batch's
                outcomes[slot] = exc
        for slot, image, result in zip(slots, images, self.captioner.caption_many(images)):
            try:
                outcomes[slot] = self._emit(events[slot].data, result, self._detect(image, result))
            except Exception as exc:
                outcomes[slot] = exc
        return [o for o in outcomes if o is not None]  # every slot is filled

    def _detect(self, image: Image.Image, result: CaptionResult) -> list[dict] | None:
        """The photo's detections in the event's form (None without a detector); their time in the timings."""
        if self.detector is None:
            return None
        found, result.timings["detect"] = self.detector.timed(image)
        return [d.as_dict() for d in found]

    def _emit(self, data: dict, result: CaptionResult, detections: list[dict] | None) -> Emit:
        request = data.get("request") or {}
        captions = [(c.prompt, c.text) for c in result.captions]
        keywords = extract_keywords(captions)
        shop = {}
        if self.recommender is not None:
            picked = self.recommender.recommend(captions, keywords, (data.get("classification") or {}).get("evidence", []),
                                                detections or [], concept_style(request, data["uploaded_at"], self.concepts),
                                                Preferences.of(request), data["job_id"])
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
            "batch_size": result.batch_size,
            **shop,
            **({"detections": detections} if detections is not None else {}),
        })

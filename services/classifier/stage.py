"""The classifier stage: ``uploaded`` photo → ``classified`` (a desk setup) or a ``not_desk`` rejection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deskgen.common.errors import FatalError, InvalidInputError
from deskgen.common.events import Event
from deskgen.common.models import ModelSources
from deskgen.common.stage import Blobs, Emit, Outcome, Reject, Stage
from deskgen.services.classifier.scoring import Score, decide
from deskgen.services.classifier.settings import ClassifierSettings

if TYPE_CHECKING:
    from deskgen.services.classifier.model import DeskClassifier
    from deskgen.services.classifier.onnx_model import OnnxDeskClassifier

__all__ = ["ClassifierStage", "build_stage"]


def build_stage(settings: ClassifierSettings) -> ClassifierStage:
    """The classifier the settings describe (the model loads in ``load``). An ``.onnx`` model is served
    with ONNX Runtime alone: torch is never imported (the classifier image has none)."""
    if settings.model.endswith(".onnx"):
        if settings.backend == "torch":
            raise FatalError("DESKGEN_CLASSIFIER_BACKEND=torch cannot serve an .onnx DESKGEN_CLASSIFIER_MODEL")
        from deskgen.services.classifier.onnx_model import OnnxDeskClassifier

        return ClassifierStage(OnnxDeskClassifier(settings.model, threshold=settings.threshold,
                                                  threads=settings.threads, max_batch=settings.batch_max,
                                                  sources=ModelSources.load()))
    from deskgen.services.classifier.model import DeskClassifier

    return ClassifierStage(DeskClassifier(settings.model, arch=settings.arch, backend=settings.backend,
                                          threshold=settings.threshold, threads=settings.threads,
                                          max_batch=settings.batch_max, head_classes=settings.head_classes,
                                          sources=ModelSources.load()))


class ClassifierStage(Stage):
    """Scores each uploaded photo; below the threshold the job ends as ``rejected: not_desk``.

    ``handle_batch`` decodes every photo, scores the decodable ones in one forward pass (chunks of
    the model's ``max_batch``) and puts an undecodable photo's InvalidInputError in its own slot.
    """

    name = "classifier"

    def __init__(self, model: DeskClassifier | OnnxDeskClassifier):
        self.model = model
        self.batch_max = model.max_batch

    def load(self) -> None:
        self.model.load()

    def handle(self, event: Event, blobs: Blobs) -> Outcome:
        outcome = self.handle_batch([event], blobs)[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def handle_batch(self, events: list[Event], blobs: Blobs) -> list[Outcome | Exception]:
        outcomes: list[Outcome | Exception | None] = [None] * len(events)
        images, slots = [], []
        for slot, event in enumerate(events):
            try:
                images.append(blobs.image(event.data["image_key"]))
                slots.append(slot)
            except InvalidInputError as exc:
                outcomes[slot] = exc
        for slot, score in zip(slots, self.model.score(images) if images else []):
            outcomes[slot] = self._outcome(score)
        return outcomes

    def _outcome(self, score: Score) -> Outcome:
        threshold = self.model.threshold
        section: dict[str, Any] = {
            "label": decide(score.score, threshold),
            "score": round(score.score, 6),
            "threshold": threshold,
            "model": self.model.card,
            "inference_ms": round(score.inference_ms, 3),
            "evidence": score.evidence,
            "batch_size": score.batch_size,
        }
        if section["label"] == "desk":
            return Emit(section=section)
        return Reject(reason="not_desk", section=section,
                      detail=f"desk score {score.score:.3f} is below the threshold {threshold:.3f}")

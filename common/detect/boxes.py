"""Boxes: a model's own detections and non-maximum suppression. Boxes are (x0, y0, x1, y1) in [0, 1]."""

from __future__ import annotations

from typing import Callable, NamedTuple, Protocol, Sequence, TypeVar

__all__ = ["RawDetection", "iou", "suppress"]

Box = tuple[float, float, float, float]


class RawDetection(NamedTuple):
    """One object as a model names it (its own class name, e.g. "Computer monitor" or "tv")."""

    name: str
    score: float
    box: Box


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when either is empty)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class Scored(Protocol):
    @property
    def score(self) -> float: ...

    @property
    def box(self) -> Box: ...


T = TypeVar("T", bound=Scored)


def suppress(items: Sequence[T], threshold: float, label: Callable[[T], str]) -> list[T]:
    """Per-label greedy non-maximum suppression: highest score first, an item overlapping (IoU > ``threshold``)
    a kept one of the same label is dropped. Deterministic: ties keep the input order."""
    kept: list[T] = []
    for item in sorted(items, key=lambda d: -d.score):
        if all(label(k) != label(item) or iou(k.box, item.box) <= threshold for k in kept):
            kept.append(item)
    return kept

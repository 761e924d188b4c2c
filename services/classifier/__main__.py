"""``python -m deskgen.services.classifier``: serve the classifier stage."""

from __future__ import annotations

from deskgen.common.runtime import serve
from deskgen.common.settings import load

from .model import DeskClassifier
from .settings import ClassifierSettings
from .stage import ClassifierStage

__all__ = ["main"]


def main() -> int:
    settings = load(ClassifierSettings)
    model = DeskClassifier(settings.model, arch=settings.arch, backend=settings.backend,
                           threshold=settings.threshold, threads=settings.threads,
                           max_batch=settings.batch_max, head_classes=settings.head_classes)
    return serve(ClassifierStage(model))


if __name__ == "__main__":
    raise SystemExit(main())

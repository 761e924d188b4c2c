"""``python -m deskgen.services.classifier``: serve the classifier stage."""

from __future__ import annotations

from deskgen.common.errors import FatalError
from deskgen.common.runtime import serve
from deskgen.common.settings import load

from .settings import ClassifierSettings
from .stage import ClassifierStage

__all__ = ["main"]


def main() -> int:
    settings = load(ClassifierSettings)
    if settings.model.endswith(".onnx"):
        # An exported model: ONNX Runtime only, torch is never imported (the classifier image has none).
        if settings.backend == "torch":
            raise FatalError("DESKGEN_CLASSIFIER_BACKEND=torch cannot serve an .onnx DESKGEN_CLASSIFIER_MODEL")
        from .onnx_model import OnnxDeskClassifier
        return serve(ClassifierStage(OnnxDeskClassifier(settings.model, threshold=settings.threshold,
                                                        threads=settings.threads, max_batch=settings.batch_max)))
    from .model import DeskClassifier

    model = DeskClassifier(settings.model, arch=settings.arch, backend=settings.backend,
                           threshold=settings.threshold, threads=settings.threads,
                           max_batch=settings.batch_max, head_classes=settings.head_classes)
    return serve(ClassifierStage(model))


if __name__ == "__main__":
    raise SystemExit(main())

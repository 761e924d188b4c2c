"""Serve a classifier exported by ``deskgen models export-onnx`` with ONNX Runtime, without torch.

The classifier image exports the packaged EfficientNet-Lite0 when it is built and ships only this
path (numpy, Pillow, ONNX Runtime): no torch in the image, a fast start.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from typing import Sequence

from PIL import Image

from deskgen.common.errors import FatalError
from deskgen.common.models import DEV_WEIGHTS, ModelSources, identify, resolve
from deskgen.services.classifier.scoring import ScoringModel, preprocess, read_logits

__all__ = ["ONNX_FORMAT", "OnnxDeskClassifier"]

ONNX_FORMAT = "deskgen-classifier-onnx/1"
_log = logging.getLogger(__name__)


class OnnxDeskClassifier(ScoringModel):
    """The ``DeskClassifier`` interface (load, score, threshold, card) over an exported ``.onnx`` file."""

    active_backend = "onnxruntime"

    def __init__(self, uri: str, *, threshold: float | None = None, threads: int | None = None, max_batch: int = 8,
                 sources: ModelSources = ModelSources()):
        self.uri = uri
        self.sources = sources
        self.threshold_override = threshold
        self.threads = threads
        self.max_batch = max_batch
        self.load_seconds: float | None = None
        self._meta: dict | None = None
        self._session = None

    @property
    def loaded(self) -> bool:
        return self._session is not None

    @property
    def threshold(self) -> float:
        if self.threshold_override is not None:
            return self.threshold_override
        meta = self._require_meta()
        if meta["classes"]:
            return meta["threshold"] if meta["threshold"] is not None else 0.5
        return meta["class_set"]["threshold"]

    def load(self) -> None:
        if self.loaded:
            return
        import onnxruntime

        started = time.perf_counter()
        path = resolve(self.uri, self.sources)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads or 0
        options.inter_op_num_threads = 1
        try:
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise FatalError(f"DESKGEN_CLASSIFIER_MODEL: {self.uri} is not a readable ONNX model: {exc}") from exc
        meta = json.loads(session.get_modelmeta().custom_metadata_map.get("deskgen", "{}"))
        if meta.get("format") != ONNX_FORMAT:
            raise FatalError(f"DESKGEN_CLASSIFIER_MODEL: {self.uri} was not exported by `deskgen models export-onnx`"
                             f" (no {ONNX_FORMAT} metadata)")
        version = meta["version"] if meta["classes"] else f"{meta['version']}+classes.{meta['class_set']['version']}"
        identity = identify(self.uri, path, name=meta["name"], version=version)
        # A file has no folder for the dev marker: export_onnx carries the exported model's weights fact.
        self.identity = replace(identity, weights=DEV_WEIGHTS) if meta.get("weights") == DEV_WEIGHTS else identity
        self._meta, self._session = meta, session
        self.load_seconds = time.perf_counter() - started
        _log.info("classifier %s (%s) loaded with onnxruntime in %.1fs", meta["name"], meta["version"],
                  self.load_seconds)

    def _forward(self, images: Sequence[Image.Image]):
        pre = self._require_meta()["preprocessing"]
        pixels = preprocess(images, pre["size"], pre["mean"], pre["std"])
        return self._loaded(self._session).run(None, {"pixels": pixels})[0]

    def _read(self, logits):
        meta = self._require_meta()
        return read_logits(logits, imagenet=meta["imagenet"], classes=meta["classes"],
                           desk_indices=None if meta["classes"] else meta["class_set"]["indices"], labels=meta["labels"])

    def _require_meta(self) -> dict:
        return self._loaded(self._meta)

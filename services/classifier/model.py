"""Desk-setup scoring: load one classifier in ``load()``, score batches of photos.

A classifier's outputs are read one of two ways (see ``checkpoint.ModelSpec``):

- a 2-class head: score = softmax probability of ``desk``;
- ImageNet logits only: score = the summed softmax probability of the desk class set in
  ``desk_classes.json`` (desk, monitor, keyboard, ...), with that file's threshold.

Evidence is the top-5 ImageNet classes when the network has ImageNet outputs, else the head's
two probabilities. Two inference backends give the same numbers (to ~1e-5): ``torch`` (BatchNorm
folded, channels-last) and ``onnxruntime`` (the network exported to ONNX at load time; several
times faster on CPUs), ``auto`` picks ONNX Runtime when it is installed.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image
from torch import nn
from torchvision.models import VGG16_Weights

from deskgen.common.errors import FatalError
from deskgen.common.models import ModelSources, identify, resolve

from deskgen.services.classifier.checkpoint import ModelSpec, load_checkpoint
from deskgen.services.classifier.networks import Preprocessing, preprocessing_for
from deskgen.services.classifier.onnx_model import ONNX_FORMAT
from deskgen.services.classifier.scoring import Score, ScoringModel, decide, read_logits
from deskgen.services.classifier.settings import DEFAULT_MODEL_URI

__all__ = ["CLASS_SET_FILE", "IMAGENET_NAMES", "BACKENDS", "ClassSet", "Score",
           "DeskClassifier", "decide", "export_onnx"]

CLASS_SET_FILE = Path(__file__).with_name("desk_classes.json")
IMAGENET_NAMES: list[str] = VGG16_Weights.IMAGENET1K_V1.meta["categories"]
BACKENDS = ("auto", "torch", "onnxruntime")

_log = logging.getLogger(__name__)
Runner = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ClassSet:
    """The ImageNet classes whose summed probability scores "desk setup" (desk_classes.json)."""

    classes: tuple[str, ...]
    indices: tuple[int, ...]
    threshold: float
    version: int

    @classmethod
    def load(cls, path: Path = CLASS_SET_FILE) -> ClassSet:
        data = json.loads(path.read_text())
        if data.get("aggregation") != "sum_of_softmax":
            raise FatalError(f"{path}: unsupported aggregation {data.get('aggregation')!r}")
        names = tuple(data["classes"])
        unknown = [name for name in names if IMAGENET_NAMES.count(name) != 1]
        if unknown:
            raise FatalError(f"{path}: not (unique) ImageNet class names: {unknown}")
        return cls(names, tuple(IMAGENET_NAMES.index(n) for n in names), float(data["threshold"]),
                   int(data["version"]))


class DeskClassifier(ScoringModel):
    """A desk-setup classifier named by a model URI; nothing heavy happens before ``load()``.

    Args:
        uri: model URI (``pkg://``, ``file://``, ``s3://``, ``hf://`` or a path).
        arch: architecture of a bare weights file (default ``efficientnet_lite0``); a checkpoint
            folder names its own, and a different explicit value here is a FatalError.
        backend: ``auto`` | ``torch`` | ``onnxruntime``.
        threshold: overrides the model's (or class set's) threshold.
        threads: onnxruntime intra-op threads (None: one per core); torch threads are set once by the service.
        max_batch: most images in one forward pass; longer lists are scored in chunks.
        head_classes: output order of a bare weights file's 2-class head.
    """

    def __init__(self, uri: str = DEFAULT_MODEL_URI, *, arch: str | None = None, backend: str = "auto",
                 threshold: float | None = None, threads: int | None = None, max_batch: int = 8,
                 head_classes: Sequence[str] = ("desk", "not_desk"), class_set: Path = CLASS_SET_FILE,
                 sources: ModelSources = ModelSources()):
        if backend not in BACKENDS:
            raise FatalError(f"unknown classifier backend {backend!r}; expected one of {BACKENDS}")
        self.uri = uri
        self.sources = sources
        self.arch = arch
        self.backend = backend
        self.threshold_override = threshold
        self.threads = threads
        self.max_batch = max_batch
        self.head_classes = tuple(head_classes)
        self.class_set_file = class_set
        self.spec: ModelSpec | None = None
        self.active_backend: str | None = None
        self.load_seconds: float | None = None
        self._preprocess: Preprocessing | None = None
        self._class_set: ClassSet | None = None
        self._run: Runner | None = None

    @property
    def loaded(self) -> bool:
        return self._run is not None

    @property
    def threshold(self) -> float:
        if self.threshold_override is not None:
            return self.threshold_override
        spec = self._require_spec()
        if spec.classes:
            return spec.threshold if spec.threshold is not None else 0.5
        return self._class_set.threshold

    def load(self) -> None:
        """Resolve the URI, build the network, prepare the backend. Idempotent."""
        if self.loaded:
            return
        started = time.perf_counter()
        path = resolve(self.uri, self.sources)
        spec, network = load_checkpoint(path, arch=self.arch or "efficientnet_lite0",
                                        head_classes=self.head_classes, expected_arch=self.arch)
        self._class_set = ClassSet.load(self.class_set_file) if not spec.classes else None
        version = spec.version if spec.classes else f"{spec.version}+classes.{self._class_set.version}"
        self.identity = identify(self.uri, path, name=spec.name, version=version)
        self._preprocess = preprocessing_for(spec.arch)
        network.fold_batchnorm()
        backend = self._pick_backend()
        self._run = _onnx_runner(network, self._preprocess.size, self.threads) if backend == "onnxruntime" \
            else _torch_runner(network)
        self.spec, self.active_backend = spec, backend
        self.load_seconds = time.perf_counter() - started
        _log.info("classifier %s (%s) loaded with %s in %.1fs", spec.name, spec.version, backend, self.load_seconds)

    def _forward(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self._loaded(self._run)(self._preprocess(images))

    def _read(self, logits: torch.Tensor) -> list[tuple[float, list[dict[str, float | str]]]]:
        spec = self._require_spec()
        return read_logits(logits.float().numpy(), imagenet=spec.imagenet, classes=spec.classes,
                           desk_indices=None if spec.classes else self._class_set.indices, labels=IMAGENET_NAMES)

    def _pick_backend(self) -> str:
        available = all(importlib.util.find_spec(name) for name in ("onnxruntime", "onnxscript"))
        if self.backend == "onnxruntime" and not available:
            raise FatalError("classifier backend onnxruntime needs the packages onnxruntime and onnxscript")
        if self.backend == "auto":
            return "onnxruntime" if available else "torch"
        return self.backend

    def _require_spec(self) -> ModelSpec:
        return self._loaded(self.spec)


def _torch_runner(network: nn.Module) -> Runner:
    network = network.to(memory_format=torch.channels_last)

    def run(pixels: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return network(pixels.contiguous(memory_format=torch.channels_last))
    return run


def _export(network: nn.Module, size: int):
    """The network as an ONNX ModelProto with a dynamic batch dimension (input ``pixels``, output ``logits``)."""
    example = torch.zeros(2, 3, size, size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(network, (example,), dynamo=True, verbose=False, optimize=True,
                                    input_names=["pixels"], output_names=["logits"],
                                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))
    return program.model_proto


def _onnx_runner(network: nn.Module, size: int, threads: int | None) -> Runner:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(_export(network, size).SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])

    def run(pixels: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"pixels": pixels.numpy()})[0])
    return run


def export_onnx(uri: str, out: Path, *, arch: str | None = None,
                head_classes: Sequence[str] = ("desk", "not_desk"), class_set: Path = CLASS_SET_FILE) -> Path:
    """Export a classifier to one ``.onnx`` file that ``onnx_model.OnnxDeskClassifier`` serves without
    torch; what the outputs mean (model card, head or class set, preprocessing, labels) travels in the
    file's ``deskgen`` metadata entry."""
    path = resolve(uri)
    spec, network = load_checkpoint(path, arch=arch or "efficientnet_lite0",
                                    head_classes=tuple(head_classes), expected_arch=arch)
    network.fold_batchnorm()
    preprocessing = preprocessing_for(spec.arch)
    proto = _export(network, preprocessing.size)
    card = {
        "format": ONNX_FORMAT, "name": spec.name, "version": spec.version, "source": uri,
        "weights": identify(uri, path).weights,
        "imagenet": spec.imagenet, "classes": list(spec.classes) if spec.classes else None,
        "threshold": spec.threshold,
        "class_set": None if spec.classes else asdict(ClassSet.load(class_set)),
        "preprocessing": {"size": preprocessing.size, "mean": list(preprocessing.mean), "std": list(preprocessing.std)},
        "labels": IMAGENET_NAMES if spec.imagenet else [],
    }
    entry = proto.metadata_props.add()
    entry.key, entry.value = "deskgen", json.dumps(card)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(proto.SerializeToString())
    return out

"""The classifier's on-disk formats: what a model path holds and how it becomes a network.

Two forms are accepted:

- a **checkpoint folder** (written by ``deskgen train classifier`` and ``deskgen models build-dev``):
  ``config.json`` (``format``, ``arch``, ``name``, ``version``, ``imagenet``, ``classes``,
  ``threshold``, optional ``vgg`` layer plan, ``base``, ``training``) and ``model.safetensors``;
- a **bare weights file** (``.pt``/``.pth`` state dict, or ``.safetensors``): the packaged ImageNet
  EfficientNet-Lite0 weights, or a VGG16 state dict of torchvision's shape (the original service's
  2-class fine-tune, or 1000-class ImageNet weights). The architecture comes from configuration,
  the head from the last layer's shape.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from deskgen.common.errors import FatalError

from deskgen.services.classifier.networks import ARCHS, IMAGENET_CLASSES, VGG16_LAYERS, DeskEfficientNet, DeskVGG

__all__ = ["FORMAT", "CONFIG_FILE", "WEIGHTS_FILE", "ModelSpec", "build_network", "load_checkpoint",
           "save_checkpoint", "file_digest"]

FORMAT = "deskgen-classifier/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class ModelSpec:
    """What a network's outputs mean and how to build it.

    Attributes:
        imagenet: the first 1000 outputs are ImageNet-1k logits.
        classes: names of the head's outputs, in order (``desk``, ``not_desk``), or None.
        threshold: the desk decision threshold; None for a pure ImageNet model (the desk class
            set's threshold applies).
        vgg: ``{"layers": [...], "hidden": N}`` for a non-standard (narrow) VGG.
    """

    arch: str
    name: str
    version: str
    imagenet: bool
    classes: tuple[str, ...] | None = None
    threshold: float | None = None
    vgg: dict[str, Any] | None = None
    base: str | None = None
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise FatalError(f"unknown classifier architecture {self.arch!r}; expected one of {ARCHS}")
        if self.arch == "efficientnet_lite0" and not self.imagenet:
            raise FatalError("an efficientnet_lite0 classifier always keeps its ImageNet outputs")
        if not self.imagenet and not self.classes:
            raise FatalError(f"classifier {self.name!r} has neither ImageNet outputs nor a head")
        if self.classes is not None and (len(self.classes) != 2 or "desk" not in self.classes):
            raise FatalError(f"classifier head classes must be two names including 'desk', not {self.classes}")


def build_network(spec: ModelSpec) -> nn.Module:
    """An untrained network of the spec's shape."""
    head = len(spec.classes) if spec.classes else 0
    if spec.arch == "efficientnet_lite0":
        return DeskEfficientNet(head_classes=head if spec.imagenet else 0)
    vgg = spec.vgg or {}
    return DeskVGG(num_classes=IMAGENET_CLASSES if spec.imagenet else head,
                   layers=vgg.get("layers", VGG16_LAYERS), hidden=vgg.get("hidden", 4096))


def load_checkpoint(path: Path, *, arch: str, head_classes: Sequence[str] = ("desk", "not_desk"),
                    expected_arch: str | None = None) -> tuple[ModelSpec, nn.Module]:
    """Read a checkpoint folder or a bare weights file into (spec, eval-mode network).

    Args:
        arch: the architecture of a bare weights file (a folder names its own).
        head_classes: the output order of a bare file's 2-class head.
        expected_arch: when set, a folder naming another architecture is a FatalError.

    Raises:
        FatalError: unreadable files, unknown architecture, or weights of the wrong shape.
    """
    if path.is_dir():
        spec, state = _read_folder(path)
        if expected_arch and spec.arch != expected_arch:
            raise FatalError(f"{path} holds a {spec.arch} classifier, but {expected_arch} was configured")
    else:
        state = _read_state_dict(path)
        spec = _infer_spec(path, state, arch, tuple(head_classes))
    network = build_network(spec)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise FatalError(f"{path}: weights do not fit a {spec.arch} classifier: {str(exc)[:500]}") from None
    return spec, network.eval()


def save_checkpoint(out: Path, network: nn.Module, spec: ModelSpec) -> Path:
    """Write ``out/config.json`` and ``out/model.safetensors``; return ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    state = {key: tensor.detach().contiguous().cpu() for key, tensor in network.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE), metadata={"format": FORMAT})
    config = {"format": FORMAT, **asdict(spec)}
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return out


def file_digest(path: Path) -> str:
    """First 12 hex digits of the file's SHA-256: a weights file's version."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def _read_folder(path: Path) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise FatalError(f"{path}: not a classifier checkpoint folder ({exc})") from None
    if config.pop("format", None) != FORMAT:
        raise FatalError(f"{path / CONFIG_FILE}: format is not {FORMAT!r}")
    try:
        classes = config.pop("classes", None)
        spec = ModelSpec(**config, classes=tuple(classes) if classes else None)
    except TypeError as exc:
        raise FatalError(f"{path / CONFIG_FILE}: {exc}") from None
    return spec, _read_state_dict(path / WEIGHTS_FILE)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same configuration error
        raise FatalError(f"cannot read classifier weights {path}: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise FatalError(f"{path}: expected a state dict, found {type(state).__name__}")
    # Checkpoints saved from DataParallel prefix every key with "module.".
    return {key.removeprefix("module."): value for key, value in state.items()}


def _infer_spec(path: Path, state: dict[str, torch.Tensor], arch: str, head_classes: tuple[str, ...]) -> ModelSpec:
    version = file_digest(path)
    if arch == "efficientnet_lite0":
        has_head = "head.weight" in state
        return ModelSpec(arch=arch, name="efficientnet_lite0-imagenet" + ("+head" if has_head else ""),
                         version=version, imagenet=True, classes=head_classes if has_head else None,
                         threshold=0.5 if has_head else None)
    if arch == "vgg16":
        last = state.get("classifier.6.weight")
        if last is None:
            raise FatalError(f"{path}: not a torchvision VGG16 state dict (no classifier.6.weight)")
        if last.shape[0] == IMAGENET_CLASSES:
            return ModelSpec(arch=arch, name="vgg16-imagenet", version=version, imagenet=True)
        if last.shape[0] != len(head_classes):
            raise FatalError(f"{path}: VGG16 head has {last.shape[0]} outputs; expected 2 or {IMAGENET_CLASSES}")
        return ModelSpec(arch=arch, name="vgg16-desk", version=version, imagenet=False,
                         classes=head_classes, threshold=0.5)
    raise FatalError(f"unknown classifier architecture {arch!r}; expected one of {ARCHS}")

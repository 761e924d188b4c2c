"""The generator stage: a captioned photo → one generated PNG (the job's terminal ``succeeded``).

Preset: ``request.preset``, else the captioner's ``captioning.preset``, else the configured
default. Steps, guidance, size, scheduler and seed come from the request within the configured
bounds, else from the settings. Without a requested seed the seed is derived from the job id, so
a replayed job regenerates the same image under the same key.

``request.mode``: ``restyle`` (default) draws a new desk from the prompt; ``keep_devices`` finds the
user's devices on the photo (the ``keep_categories``, with the same detector that locates products),
masks them and inpaints everything around them, so the result keeps the
user's own pixels there (and stores the mask beside the image). A photo with no device found is
restyled, and the output says so. ``request.fast`` adds the few-step LoRA: its scheduler, CFG off,
``fast_steps`` by default; it combines with every preset and both modes.
"""

from __future__ import annotations

import hashlib
import io
import math
import time
from typing import Any

from PIL import Image

from deskgen.common.errors import FatalError, InvalidInputError
from deskgen.common.events import Event
from deskgen.common.keys import generated_key, generated_mask_key
from deskgen.common.stage import Blob, Blobs, Emit, Stage
from deskgen.services.generator.locate import Detector, build_detector, locate
from deskgen.services.generator.masks import Device, DeviceMasker
from deskgen.services.generator.model import GenerationOptions, GeneratorModel, build_model
from deskgen.services.generator.presets import Preset, PresetTable
from deskgen.services.generator.settings import GeneratorSettings

__all__ = ["GeneratorStage", "build_stage", "MODES", "resolve_preset", "resolve_mode", "resolve_options",
           "derive_seed", "encode_png", "build_masker"]

_MAX_SEED = 2**32 - 1
MODES = ("restyle", "keep_devices")


def build_stage(settings: GeneratorSettings) -> GeneratorStage:
    """The generator the settings describe: model, detector and keep masker (models load in ``load``)."""
    model = build_model(settings)
    return GeneratorStage(model, settings, build_detector(settings.locator, settings.locator_model or None,
                                                          model.sources), masker=build_masker(settings, model))


class GeneratorStage(Stage):
    name = "generator"

    def __init__(self, model: GeneratorModel, settings: GeneratorSettings, detector: Detector | None = None, *,
                 masker: DeviceMasker | None = None):
        self.model = model
        self.settings = settings
        self.detector = detector
        self.masker = masker or build_masker(settings, model)
        if model.presets.get(settings.default_preset) is None:
            raise FatalError(f"default preset {settings.default_preset!r} is not in the preset table")

    def load(self) -> None:
        self.model.load()
        self.masker.load()
        if self.detector is not None:
            self.detector.load()
        if self.model.options.warmup:
            presets = self.model.presets.names() if self.model.options.compile else [self.settings.default_preset]
            self.model.warm_up(resolve_options({}, self.settings, "warmup"), presets)

    def handle(self, event: Event, blobs: Blobs) -> Emit:
        captioning = event.data.get("captioning") or {}
        prompt = captioning.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidInputError("caption_missing", "the captioned event has no captioning.prompt",
                                    status="failed")
        request = event.data.get("request") or {}
        preset = resolve_preset(self.model.presets, request, captioning, self.settings.default_preset)
        mode = resolve_mode(request)
        options = resolve_options(request, self.settings, event.job_id)
        key = generated_key(event.job_id, preset.name)
        negative_prompt = captioning.get("negative_prompt") or ""
        kept, extra = {}, ()
        if mode == "keep_devices":
            kept = self._keep_devices(event, blobs, options)
            if "fallback" in kept:
                mode = "restyle"
        if mode == "keep_devices":
            original, keep = kept.pop("original"), kept.pop("keep")
            generated = self.model.inpaint(prompt, negative_prompt, preset, options, original, keep,
                                           self.settings.feather_px)
            extra = (Blob(key=kept["mask_key"], data=encode_png(keep, self.settings.png_compress_level),
                          content_type="image/png"),)
        else:
            generated = self.model.generate(prompt, negative_prompt, preset, options)
        started = time.perf_counter()
        png = encode_png(generated.image, self.settings.png_compress_level)
        encode_ms = (time.perf_counter() - started) * 1000
        section = {
            "image_key": key,
            "mode": mode,
            "fast": options.fast,
            **kept,
            "preset": preset.name,
            "adapters": preset.adapters,
            "seed": options.seed,
            "steps": options.steps,
            "guidance": options.guidance,
            "width": options.width,
            "height": options.height,
            "scheduler": options.scheduler,
            "model": self.model.card,
            "weights": self.model.weights,
            "timings": {"inference_ms": round(generated.inference_ms, 1), "encode_ms": round(encode_ms, 1),
                        "preset_switch_ms": round(generated.preset_switch_ms, 3)},
            "peak_gpu_mem_bytes": generated.peak_gpu_mem_bytes,
        }
        products = captioning.get("products")
        if products is not None:
            section["products"] = products
            if products and self.detector is not None:
                started = time.perf_counter()
                # Located on the stored image itself (the PNG decoded back), so coordinates fit what is served.
                section["products"] = locate(self.detector, Image.open(io.BytesIO(png)).convert("RGB"), products)
                section["timings"]["locate_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return Emit(section=section, blobs=(Blob(key=key, data=png, content_type="image/png"), *extra))

    def _keep_devices(self, event: Event, blobs: Blobs, options: GenerationOptions) -> dict[str, Any]:
        """The output fields of a keep_devices job plus the resized photo and its keep mask (``original``,
        ``keep``); only ``fallback`` (and why) when there is nothing to keep."""
        if self.detector is None:
            return {"fallback": "no_device_detector"}
        photo = blobs.image(event.data["image_key"])
        found = self.detector.detect(photo, self.settings.keep_categories)
        devices = [Device(category, hit.box, hit.score) for category, hits in found.items() for hit in hits]
        if not devices:
            return {"fallback": "no_devices_found"}
        # Boxes are normalised, so they hold on the photo resized to the output size.
        original = photo.convert("RGB").resize((options.width, options.height), Image.Resampling.LANCZOS)
        keep = self.masker.mask(original, [device.box for device in devices])
        return {"original": original, "keep": keep, "kept_devices": [device.as_dict() for device in devices],
                "mask_key": generated_mask_key(event.job_id), "strength": options.strength,
                "detector": self.detector.name, "masker": self.masker.name}


def build_masker(settings: GeneratorSettings, model: GeneratorModel) -> DeviceMasker:
    """The keep-mask builder from the settings, on the model's device."""
    return DeviceMasker(settings.sam, settings.mask_grow, model.device, model.sources)


def resolve_preset(table: PresetTable, request: dict[str, Any], captioning: dict[str, Any],
                   default: str) -> Preset:
    """The request's preset, else the captioner's, else ``default``; unknown names are rejected."""
    name = request.get("preset") or captioning.get("preset") or default
    preset = table.get(name) if isinstance(name, str) else None
    if preset is None:
        raise InvalidInputError("unknown_preset", f"preset {name!r:.40} is not one of {table.names()}")
    return preset


def resolve_mode(request: dict[str, Any]) -> str:
    mode = request.get("mode", "restyle")
    _check(mode in MODES, "mode", mode, f"one of {list(MODES)}")
    return mode


def resolve_options(request: dict[str, Any], settings: GeneratorSettings, job_id: str) -> GenerationOptions:
    """Generation options from the request within the settings' bounds (InvalidInputError
    ``options_out_of_bounds`` naming the field and the bound), defaults from the settings.

    With ``fast``: the fast steps bound, guidance at most 1 (CFG off, default 0) and the fast LoRA's scheduler.
    """
    fast = request.get("fast", False)
    _check(isinstance(fast, bool), "fast", fast, "true or false")
    _check(not fast or bool(settings.fast_lora), "fast", fast, "false: no fast LoRA is configured")
    most_steps = settings.fast_max_steps if fast else settings.max_steps
    steps = request.get("steps", settings.fast_steps if fast else settings.steps)
    _check(_is_int(steps) and settings.min_steps <= steps <= most_steps, "steps", steps,
           f"an integer in [{settings.min_steps}, {most_steps}]" + (" with fast" if fast else ""))
    lowest, highest = (0.0, 1.0) if fast else (settings.min_guidance, settings.max_guidance)
    guidance = request.get("guidance", 0.0 if fast else settings.guidance)
    _check(_is_number(guidance) and lowest <= guidance <= highest, "guidance", guidance,
           f"a number in [{lowest}, {highest}]" + (" with fast (CFG off)" if fast else ""))
    sizes = {}
    for side, largest in (("width", settings.max_width), ("height", settings.max_height)):
        value = request.get(side, getattr(settings, side))
        _check(_is_int(value) and settings.min_side <= value <= largest and value % settings.size_multiple == 0,
               side, value, f"an integer in [{settings.min_side}, {largest}], a multiple of {settings.size_multiple}")
        sizes[side] = value
    if fast:
        scheduler = request.get("scheduler", settings.fast_scheduler)
        _check(scheduler == settings.fast_scheduler, "scheduler", scheduler,
               f"{settings.fast_scheduler!r} (the fast LoRA's scheduler) with fast")
    else:
        scheduler = request.get("scheduler", settings.scheduler)
        _check(scheduler in settings.allowed_schedulers, "scheduler", scheduler,
               f"one of {settings.allowed_schedulers}")
    strength = request.get("strength", settings.strength)
    _check(_is_number(strength) and settings.min_strength <= strength <= 1, "strength", strength,
           f"a number in [{settings.min_strength}, 1]")
    # diffusers runs int(steps × strength) inpainting steps: at least one.
    _check(request.get("mode") != "keep_devices" or int(steps * strength) >= 1, "strength", strength,
           f"at least {1 / steps:.3g} with {steps} steps (steps × strength ≥ 1)")
    seed = request.get("seed")
    if seed is None:
        seed = derive_seed(job_id)
    _check(_is_int(seed) and 0 <= seed <= _MAX_SEED, "seed", seed, f"an integer in [0, {_MAX_SEED}]")
    return GenerationOptions(steps=steps, guidance=float(guidance), scheduler=scheduler, seed=seed, fast=fast,
                             strength=float(strength), **sizes)


def derive_seed(job_id: str) -> int:
    """The first 4 bytes of sha256(job id), big-endian: stable across processes and replays."""
    return int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:4], "big")


def encode_png(image, compress_level: int) -> bytes:
    """PNG bytes with no time-dependent metadata, so equal images give equal bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _check(ok: bool, field: str, value: Any, bound: str) -> None:
    if not ok:
        raise InvalidInputError("options_out_of_bounds", f"{field}={value!r:.40} must be {bound}")

"""The generator stage: a captioned photo → one generated PNG (the job's terminal ``succeeded``).

Preset: ``request.preset``, else the captioner's ``captioning.preset``, else the configured
default. Steps, guidance, size, scheduler and seed come from the request within the configured
bounds, else from the settings. Without a requested seed the seed is derived from the job id, so
a replayed job regenerates the same image under the same key.
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
from deskgen.common.keys import generated_key
from deskgen.common.models import ModelSources
from deskgen.common.stage import Blob, Blobs, Emit, Stage
from deskgen.services.generator.locate import Detector, build_detector, locate
from deskgen.services.generator.model import GenerationOptions, GeneratorModel, build_model
from deskgen.services.generator.presets import Preset, PresetTable
from deskgen.services.generator.settings import GeneratorSettings

__all__ = ["GeneratorStage", "build_stage", "resolve_preset", "resolve_options", "derive_seed", "encode_png"]

_MAX_SEED = 2**32 - 1


def build_stage(settings: GeneratorSettings) -> GeneratorStage:
    """The generator the settings describe (models load in ``load``)."""
    return GeneratorStage(build_model(settings), settings,
                          build_detector(settings.locator, settings.locator_model or None, ModelSources.load()))


class GeneratorStage(Stage):
    name = "generator"
    consumes = "captioned"
    produces = "generated"
    section = "output"

    def __init__(self, model: GeneratorModel, settings: GeneratorSettings, detector: Detector | None = None):
        self.model = model
        self.settings = settings
        self.detector = detector
        if model.presets.get(settings.default_preset) is None:
            raise FatalError(f"default preset {settings.default_preset!r} is not in the preset table")

    def load(self) -> None:
        self.model.load()
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
        options = resolve_options(request, self.settings, event.job_id)
        key = generated_key(event.job_id, preset.name)
        generated = self.model.generate(prompt, captioning.get("negative_prompt") or "", preset, options)
        started = time.perf_counter()
        png = encode_png(generated.image, self.settings.png_compress_level)
        encode_ms = (time.perf_counter() - started) * 1000
        section = {
            "image_key": key,
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
        return Emit(section=section, blobs=(Blob(key=key, data=png, content_type="image/png"),))


def resolve_preset(table: PresetTable, request: dict[str, Any], captioning: dict[str, Any],
                   default: str) -> Preset:
    """The request's preset, else the captioner's, else ``default``; unknown names are rejected."""
    name = request.get("preset") or captioning.get("preset") or default
    preset = table.get(name) if isinstance(name, str) else None
    if preset is None:
        raise InvalidInputError("unknown_preset", f"preset {name!r:.40} is not one of {table.names()}")
    return preset


def resolve_options(request: dict[str, Any], settings: GeneratorSettings, job_id: str) -> GenerationOptions:
    """Generation options from the request within the settings' bounds (InvalidInputError
    ``options_out_of_bounds`` naming the field and the bound), defaults from the settings."""
    steps = request.get("steps", settings.steps)
    _check(_is_int(steps) and settings.min_steps <= steps <= settings.max_steps, "steps", steps,
           f"an integer in [{settings.min_steps}, {settings.max_steps}]")
    guidance = request.get("guidance", settings.guidance)
    _check(_is_number(guidance) and settings.min_guidance <= guidance <= settings.max_guidance, "guidance",
           guidance, f"a number in [{settings.min_guidance}, {settings.max_guidance}]")
    sizes = {}
    for side, largest in (("width", settings.max_width), ("height", settings.max_height)):
        value = request.get(side, getattr(settings, side))
        _check(_is_int(value) and settings.min_side <= value <= largest and value % settings.size_multiple == 0,
               side, value, f"an integer in [{settings.min_side}, {largest}], a multiple of {settings.size_multiple}")
        sizes[side] = value
    scheduler = request.get("scheduler", settings.scheduler)
    _check(scheduler in settings.allowed_schedulers, "scheduler", scheduler,
           f"one of {settings.allowed_schedulers}")
    seed = request.get("seed")
    if seed is None:
        seed = derive_seed(job_id)
    _check(_is_int(seed) and 0 <= seed <= _MAX_SEED, "seed", seed, f"an integer in [0, {_MAX_SEED}]")
    return GenerationOptions(steps=steps, guidance=float(guidance), scheduler=scheduler, seed=seed, **sizes)


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

"""What a captioned event asks the generator for, checked once (diffusers' ``check_inputs`` style).

``parse_request`` turns the event's data into a typed ``GenerationRequest`` or raises InvalidInputError:
``caption_missing`` (failed) without a prompt, ``unknown_preset`` and ``options_out_of_bounds`` (rejected,
naming the field and its bound) otherwise. The mode is decided here and nowhere else.

What the generator runs with (``Parts``) bounds it too: a request that names a preset whose adapters are
not configured is rejected ``preset_unavailable``, ``fast`` without a fast LoRA ``fast_unavailable``,
``keep_devices`` without a locator ``keep_devices_unavailable``.

Preset: ``request.preset``, else the captioner's ``captioning.preset``, else the configured default; a
preset the request did not name whose adapters are missing falls back to ``base``, and the request
carries the fallback (``PresetFallback``) so the output says so.
Steps, guidance, size, scheduler, strength and seed come from the request within the configured bounds,
else from the settings. A request that names no size gets its photo's aspect bucket (``sized_for``), never
a fixed default; naming one side takes the other from the settings. Without a requested seed the seed is
derived from the job id, so a replayed job regenerates the same image. ``fast`` adds the few-step LoRA: its
scheduler, CFG off, ``fast_steps``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from deskgen.common.errors import InvalidInputError
from deskgen.common.request import DEFAULT_MODE, MODES
from deskgen.services.generator.geometry import Size, nearest_bucket
from deskgen.services.generator.model import GenerationOptions
from deskgen.services.generator.presets import BASE_PRESET, Preset, PresetTable
from deskgen.services.generator.settings import GeneratorSettings

__all__ = ["GenerationRequest", "Parts", "PresetFallback", "parse_request", "resolve_preset", "resolve_options",
           "derive_seed", "KEEP_DEVICES"]

KEEP_DEVICES = "keep_devices"
_MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Parts:
    """The optional parts a generator runs with: the presets it cannot serve (→ the adapters each lacks), a
    fast LoRA, a locator."""

    unavailable: Mapping[str, list[str]] = field(default_factory=dict)
    fast: bool = True
    locator: bool = True


@dataclass(frozen=True)
class PresetFallback:
    """A preset the request did not name (``chosen_by`` the captioner or the default) that could not run,
    the adapters it lacks, and the preset used instead."""

    requested: str
    chosen_by: str
    missing: list[str]
    used: str = BASE_PRESET

    def as_dict(self) -> dict[str, Any]:
        return {"requested": self.requested, "used": self.used, "chosen_by": self.chosen_by,
                "missing_adapters": self.missing}


@dataclass(frozen=True)
class GenerationRequest:
    """One job's generation, checked: prompts, preset, mode, options and the captioner's products (or None)."""

    prompt: str
    negative_prompt: str
    preset: Preset
    mode: str
    options: GenerationOptions
    products: list[dict[str, Any]] | None = None
    detections: list[dict[str, Any]] | None = None  # the captioner's, on the upright photo (None: it ran none)
    size_named: bool = True
    preset_fallback: PresetFallback | None = None

    @property
    def keeps_devices(self) -> bool:
        return self.mode == KEEP_DEVICES

    def sized_for(self, photo: Size, sizes: tuple[Size, ...]) -> GenerationRequest:
        """This request at the size of ``sizes`` nearest the photo's aspect, unless it names its size."""
        if self.size_named:
            return self
        width, height = nearest_bucket(photo, sizes)
        return replace(self, options=replace(self.options, width=width, height=height), size_named=True)


def parse_request(data: dict[str, Any], settings: GeneratorSettings, presets: PresetTable, job_id: str,
                  parts: Parts = Parts()) -> GenerationRequest:
    """The checked request of a captioned event's ``data``, for a generator running with ``parts``."""
    captioning = data.get("captioning") or {}
    prompt = captioning.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidInputError("caption_missing", "the captioned event has no captioning.prompt", status="failed")
    request = data.get("request") or {}
    mode = request.get("mode", DEFAULT_MODE)
    _check(mode in MODES, "mode", mode, f"one of {list(MODES)}")
    if mode == KEEP_DEVICES and not parts.locator:
        raise InvalidInputError("keep_devices_unavailable", "mode=keep_devices needs a locator to find the devices; "
                                "this generator runs with DESKGEN_GENERATOR_LOCATOR=off")
    if request.get("fast") is True and not parts.fast:
        raise InvalidInputError("fast_unavailable", "fast=true needs a few-step LoRA; this generator runs without "
                                "one (DESKGEN_GENERATOR_FAST_LORA is empty)")
    preset, fallback = resolve_preset(presets, request, captioning, settings.default_preset, parts.unavailable)
    return GenerationRequest(
        prompt=prompt, negative_prompt=captioning.get("negative_prompt") or "", preset=preset, mode=mode,
        options=resolve_options(request, settings, job_id, keep_devices=mode == KEEP_DEVICES),
        products=captioning.get("products"), detections=captioning.get("detections"), size_named="width" in request or "height" in request,
        preset_fallback=fallback)


def resolve_preset(table: PresetTable, request: dict[str, Any], captioning: dict[str, Any], default: str,
                   unavailable: Mapping[str, list[str]] | None = None) -> tuple[Preset, PresetFallback | None]:
    """The request's preset, else the captioner's, else ``default``; unknown names are rejected. A preset in
    ``unavailable`` (→ its missing adapters) is rejected when the request names it, else replaced by ``base``."""
    unavailable = unavailable or {}
    chosen_by = "request" if request.get("preset") else "captioner" if captioning.get("preset") else "default"
    name = request.get("preset") or captioning.get("preset") or default
    preset = table.get(name) if isinstance(name, str) else None
    if preset is None:
        raise InvalidInputError("unknown_preset", f"preset {name!r:.40} is not one of {table.names()}")
    if name not in unavailable:
        return preset, None
    if chosen_by == "request":
        available = [n for n in table.names() if n not in unavailable]
        raise InvalidInputError("preset_unavailable", f"preset {name!r} needs the adapters {unavailable[name]}, "
                                f"which this generator runs without; available: {available}")
    return table.presets[BASE_PRESET], PresetFallback(name, chosen_by, list(unavailable[name]))


def resolve_options(request: dict[str, Any], settings: GeneratorSettings, job_id: str, *,
                    keep_devices: bool = False) -> GenerationOptions:
    """Generation options from the request within the settings' bounds (InvalidInputError
    ``options_out_of_bounds`` naming the field and the bound), defaults from the settings.

    With ``fast``: the fast steps bound, guidance at most 1 (CFG off, default 0) and the fast LoRA's scheduler.
    """
    fast = request.get("fast", False)
    _check(isinstance(fast, bool), "fast", fast, "true or false")
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
    _check(not keep_devices or int(steps * strength) >= 1, "strength", strength,
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _check(ok: bool, field: str, value: Any, bound: str) -> None:
    if not ok:
        raise InvalidInputError("options_out_of_bounds", f"{field}={value!r:.40} must be {bound}")

"""What a captioned event asks the generator for, checked once (diffusers' ``check_inputs`` style).

``parse_request`` turns the event's data into a typed ``GenerationRequest`` or raises InvalidInputError:
``caption_missing`` (failed) without a prompt, ``unknown_preset`` and ``options_out_of_bounds`` (rejected,
naming the field and its bound) otherwise. The mode is decided here and nowhere else.

Preset: ``request.preset``, else the captioner's ``captioning.preset``, else the configured default.
Steps, guidance, size, scheduler, strength and seed come from the request within the configured bounds,
else from the settings. A request that names no size gets its photo's aspect bucket (``sized_for``), never
a fixed default; naming one side takes the other from the settings. Without a requested seed the seed is
derived from the job id, so a replayed job regenerates the same image. ``fast`` adds the few-step LoRA: its
scheduler, CFG off, ``fast_steps``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from typing import Any

from deskgen.common.errors import InvalidInputError
from deskgen.common.request import DEFAULT_MODE, MODES
from deskgen.services.generator.geometry import Size, nearest_bucket
from deskgen.services.generator.model import GenerationOptions
from deskgen.services.generator.presets import Preset, PresetTable
from deskgen.services.generator.settings import GeneratorSettings

__all__ = ["GenerationRequest", "parse_request", "resolve_preset", "resolve_options", "derive_seed", "KEEP_DEVICES"]

KEEP_DEVICES = "keep_devices"
_MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class GenerationRequest:
    """One job's generation, checked: prompts, preset, mode, options and the captioner's products (or None)."""

    prompt: str
    negative_prompt: str
    preset: Preset
    mode: str
    options: GenerationOptions
    products: list[dict[str, Any]] | None = None
    size_named: bool = True

    @property
    def keeps_devices(self) -> bool:
        return self.mode == KEEP_DEVICES

    def sized_for(self, photo: Size, sizes: tuple[Size, ...]) -> GenerationRequest:
        """This request at the size of ``sizes`` nearest the photo's aspect, unless it names its size."""
        if self.size_named:
            return self
        width, height = nearest_bucket(photo, sizes)
        return replace(self, options=replace(self.options, width=width, height=height), size_named=True)


def parse_request(data: dict[str, Any], settings: GeneratorSettings, presets: PresetTable,
                  job_id: str) -> GenerationRequest:
    """The checked request of a captioned event's ``data``."""
    captioning = data.get("captioning") or {}
    prompt = captioning.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidInputError("caption_missing", "the captioned event has no captioning.prompt", status="failed")
    request = data.get("request") or {}
    mode = request.get("mode", DEFAULT_MODE)
    _check(mode in MODES, "mode", mode, f"one of {list(MODES)}")
    return GenerationRequest(
        prompt=prompt, negative_prompt=captioning.get("negative_prompt") or "",
        preset=resolve_preset(presets, request, captioning, settings.default_preset), mode=mode,
        options=resolve_options(request, settings, job_id, keep_devices=mode == KEEP_DEVICES),
        products=captioning.get("products"), size_named="width" in request or "height" in request)


def resolve_preset(table: PresetTable, request: dict[str, Any], captioning: dict[str, Any],
                   default: str) -> Preset:
    """The request's preset, else the captioner's, else ``default``; unknown names are rejected."""
    name = request.get("preset") or captioning.get("preset") or default
    preset = table.get(name) if isinstance(name, str) else None
    if preset is None:
        raise InvalidInputError("unknown_preset", f"preset {name!r:.40} is not one of {table.names()}")
    return preset


def resolve_options(request: dict[str, Any], settings: GeneratorSettings, job_id: str, *,
                    keep_devices: bool = False) -> GenerationOptions:
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

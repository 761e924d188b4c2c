"""The generator stage: a captioned photo → one generated PNG (the job's terminal ``succeeded``).

The request is checked by ``request.parse_request`` (preset, mode, options). ``restyle`` draws a new
desk from the prompt; ``keep_devices`` keeps the user's devices on the photo (the ``keep_categories``): those the
captioner's object detectors found (the event's ``detections``, not looked for again), else what the locator
finds on the photo; it masks them and inpaints everything around them, so the
result keeps the user's own pixels there (and stores the mask beside the image). A photo with no device
found is restyled, and the output says why. The models are the stage's ``Components``, placed on one
device by one policy (``components.Placement``), resolved and loaded in ``load()`` (after ``/healthz``
answers). Only the base model is required: what runs without the others is ``request.Parts``, listed at
start-up and in the metrics; each job's ``timings`` give every component's milliseconds.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from PIL import Image

from deskgen.common import metrics
from deskgen.common.errors import FatalError
from deskgen.common.events import Event
from deskgen.common.keys import generated_key, generated_mask_key
from deskgen.common.models import resolve
from deskgen.common.request import DEFAULT_MODE
from deskgen.common.stage import Blob, Blobs, Emit, Stage
from deskgen.services.generator.geometry import Box, Size, fit, into_crop, point_into_crop, upright_size
from deskgen.services.generator.locate import Detection, Detector, build_detector, from_captioner, locate
from deskgen.services.generator.masks import DeviceMasker
from deskgen.services.generator.components import lora_file
from deskgen.services.generator.model import FAST_ADAPTER, Generated, GeneratorModel, build_model
from deskgen.services.generator.presets import BASE_PRESET
from deskgen.services.generator.request import (KEEP_DEVICES, GenerationRequest, Parts, parse_request,
                                                resolve_options)
from deskgen.services.generator.settings import GeneratorSettings
from deskgen.services.generator.styles import AdapterRow, StyleTable

__all__ = ["GeneratorStage", "Components", "KeptDevices", "build_stage", "build_components", "encode_png"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Components:
    """Every model the stage runs, sharing one placement: SDXL (with its LoRAs and inpainting UNet), the keep
    masker (SAM or boxes) and the device/product detector (None: off)."""

    model: GeneratorModel
    masker: DeviceMasker
    detector: Detector | None = None

    @property
    def parts(self) -> Parts:
        return Parts(unavailable=self.model.unavailable, fast=self.model.fast is not None,
                     locator=self.detector is not None)

    def load(self) -> None:
        """Resolve and load every configured part; a configured SAM or locator that cannot load stops start-up
        with one line naming its setting."""
        self.model.load()
        _load_part(self.masker.load, f"DESKGEN_GENERATOR_SAM={self.masker.sam_uri}")
        if self.detector is not None:
            _load_part(self.detector.load, f"DESKGEN_GENERATOR_LOCATOR={self.detector.kind}")

    def info(self) -> list[dict[str, str]]:
        """Every part, configured or off: component, kind, weights (real | dev-random; empty where the part's
        files cannot tell), uri and placement."""
        model, placement = self.model, str(self.model.placement)

        def part(component: str, kind: str, uri: str = "", weights: str = "") -> dict[str, str]:
            return {"component": component, "kind": kind if uri else "off", "weights": weights, "uri": uri,
                    "placement": placement if uri else ""}

        parts = [part("sdxl", "sdxl", model.base_uri, model.card.weights)]
        parts += [part(f"lora_{name}", "lora", model.lora_uris.get(name, "")) for name in model.presets.adapters]
        parts.append(part("fast_lora", "lora", model.fast.uri if model.fast else ""))
        parts.append(part("inpaint_unet", "unet", model.inpaint_unet_uri))
        sam, detector = self.masker.card, self.detector
        parts.append(part("sam", "sam", sam.uri, sam.weights) if sam else part("sam", "off"))
        card = detector.card if detector is not None else None
        parts.append(part("locator", detector.kind, card.uri, card.weights) if detector and card
                     else part("locator", "off"))
        return parts


@dataclass(frozen=True)
class KeptDevices:
    """The devices a keep_devices job keeps: the photo cropped and scaled to the output size, its keep mask
    (255 = kept), the devices (boxes normalised to the output), the crop (normalised to the photo) and the
    names of the detector and masker that found them."""

    photo: Image.Image
    mask: Image.Image
    devices: list[Detection]
    detector: str
    masker: str
    crop: Box = (0.0, 0.0, 1.0, 1.0)


def build_components(settings: GeneratorSettings) -> Components:
    """The components the settings describe, on the settings' device and dtype (models load in ``load``)."""
    model = build_model(settings)
    placement = model.placement
    return Components(model, DeviceMasker(settings.sam, settings.mask_grow, placement, model.sources),
                      build_detector(settings.locator, settings.locator_model or None, placement, model.sources,
                                     detector_dir=settings.detector_dir))


def build_stage(settings: GeneratorSettings) -> GeneratorStage:
    return GeneratorStage(build_components(settings), settings)


class GeneratorStage(Stage):
    name = "generator"

    def __init__(self, components: Components, settings: GeneratorSettings):
        self.components = components
        self.model = components.model
        self.settings = settings
        if self.model.presets.get(settings.default_preset) is None:
            raise FatalError(f"default preset {settings.default_preset!r} is not in the preset table")
        self.sizes = settings.aspect_buckets()
        self.parts = components.parts
        # The styles topic (styles.py) extends the settings' adapters and presets.json while the service runs.
        self.styles = StyleTable(self.model.sources)
        self.tables = (self.styles,)
        self._file_presets = self.model.presets
        self._settings_adapters = {name: uri for name, uri in self.model.lora_uris.items() if name != FAST_ADAPTER}
        self._table_adapters: dict[str, AdapterRow] = {}
        self._table_presets: dict[str, dict[str, float]] = {}

    def load(self) -> None:
        self.components.load()
        self.parts = self.components.parts
        self._report_parts()
        if self.model.options.warmup:
            default = self.settings.default_preset
            presets = self.model.available if self.model.options.compile else [
                default if default in self.model.available else BASE_PRESET]
            self.model.warm_up(resolve_options({}, self.settings, "warmup"), presets)

    def _follow_styles(self) -> None:
        """Apply the styles topic's changes since the last job: adapters loaded, replaced or removed, presets
        replaced; each adapter also serves as a preset of its own name at its default weight."""
        changes = self.styles.take()
        if not changes:
            return
        for change in changes:
            kind, _, name = change.key.partition(":")
            if kind == "preset":
                if change.value is None:
                    self._table_presets.pop(name, None)
                else:
                    self._table_presets[name] = dict(change.value.adapters)
            else:
                self._follow_adapter(name, change.value)
        own = {name: {name: row.weight} for name, row in self._table_adapters.items()}
        self.model.set_presets(self._file_presets.with_rows(self._table_adapters, {**own, **self._table_presets}))
        self.parts = self.components.parts
        self._report_parts()

    def _follow_adapter(self, name: str, row: AdapterRow | None) -> None:
        """Load a published adapter, or on its deletion restore the settings' adapter of that name (if any)."""
        try:
            if row is not None:
                self.model.load_adapter(name, row.path, row.uri)
                self._table_adapters[name] = row
                log.info("generator: adapter %s loaded from %s", name, row.uri)
                return
            self._table_adapters.pop(name, None)
            configured = self._settings_adapters.get(name)
            if configured:
                self.model.load_adapter(name, str(lora_file(resolve(configured, self.model.sources))), configured)
            else:
                self.model.unload_adapter(name)
            log.info("generator: adapter %s deleted%s", name, f"; back to {configured}" if configured else "")
        except Exception as exc:  # a file that is no LoRA: the adapter loaded before stays
            log.error("generator: adapter %s not changed: %s: %s", name, type(exc).__name__, str(exc)[:300])

    def _report_parts(self) -> None:
        """One log line of what runs and what is off; the same in the metrics."""
        unavailable = self.parts.unavailable
        metrics.COMPONENT_INFO.clear()  # adapters come and go with the styles topic
        metrics.PRESET_AVAILABLE.clear()
        for part in self.components.info():
            metrics.COMPONENT_INFO.labels(stage=self.name, **part).set(1)
        for preset in self.model.presets.names():
            metrics.PRESET_AVAILABLE.labels(self.name, preset).set(0 if preset in unavailable else 1)
        detector = self.components.detector
        log.info("generator parts: presets available %s; unavailable %s; fast %s; keep_devices %s; masks %s",
                 self.model.available, {name: missing for name, missing in unavailable.items()} or "none",
                 self.model.fast.uri if self.model.fast else "off (fast requests are rejected)",
                 f"locator {detector.name}" if detector else "off (keep_devices requests are rejected)",
                 self.components.masker.name)

    def handle(self, event: Event, blobs: Blobs) -> Emit:
        self._follow_styles()  # between jobs: no adapter changes under a running one
        request = parse_request(event.data, self.settings, self.model.presets, event.job_id, self.parts)
        key = event.data["image_key"]
        timings: dict[str, float] = {}
        photo = None
        if request.keeps_devices or not request.size_named:  # the photo decoded, or only its header read
            started = time.perf_counter()
            photo = blobs.image(key) if request.keeps_devices else None
            if not request.size_named:
                request = request.sized_for(photo.size if photo is not None else _photo_size(blobs, key), self.sizes)
            _lap(timings, "photo_ms", started)
        kept, fallback = self._kept_devices(photo, request, timings) if photo is not None else (None, None)
        if kept is not None:
            generated = self.model.inpaint(request.prompt, request.negative_prompt, request.preset, request.options,
                                           kept.photo, kept.mask, self.settings.feather_px)
        else:
            generated = self.model.generate(request.prompt, request.negative_prompt, request.preset, request.options)
        started = time.perf_counter()
        png = encode_png(generated.image, self.settings.png_compress_level)
        section = self._output(event.job_id, request, generated, kept, fallback)
        section["timings"] = {**timings, **section["timings"]}
        _lap(section["timings"], "encode_ms", started)
        stored = [Blob(key=section["image_key"], data=png, content_type="image/png")]
        if kept is not None:
            stored.append(Blob(key=section["mask_key"], data=encode_png(kept.mask, self.settings.png_compress_level),
                               content_type="image/png"))
        if request.products and self.components.detector is not None:
            started = time.perf_counter()
            # Located on the stored image itself (the PNG decoded back), so coordinates fit what is served.
            image = Image.open(io.BytesIO(png)).convert("RGB")
            section["products"] = locate(self.components.detector, image, request.products)
            _lap(section["timings"], "locate_ms", started)
        return Emit(section=section, blobs=tuple(stored))

    def _kept_devices(self, photo: Image.Image, request: GenerationRequest,
                      timings: dict[str, float]) -> tuple[KeptDevices | None, str | None]:
        """The devices to keep on ``photo``, or None and why restyle runs; adds the detector's (``detect_ms``)
        and the masker's (``mask_ms``) time to ``timings``."""
        detector = self.components.detector
        if detector is None:  # parse_request rejects keep_devices without a locator
            raise RuntimeError("keep_devices reached a generator without a locator")
        if request.detections is not None and self.settings.reuse_detections:
            found, found_by = from_captioner(request.detections, self.settings.keep_categories)
        else:
            started = time.perf_counter()
            found, found_by = list(detector.detect(photo, self.settings.keep_categories).values()), detector.name
            _lap(timings, "detect_ms", started)
        fitted, crop = fit(photo, (request.options.width, request.options.height))
        # Found on the whole photo; kept where they fall inside the crop, in the output's coordinates.
        devices = [replace(hit, box=box, centre=point_into_crop(hit.centre, crop))
                   for hits in found for hit in hits
                   if (box := into_crop(hit.box, crop)) is not None]
        if not devices:
            return None, "no_devices_found"
        masker = self.components.masker
        started = time.perf_counter()
        mask = masker.mask(fitted, [d.box for d in devices])
        _lap(timings, "mask_ms", started)
        return KeptDevices(fitted, mask, devices, found_by, masker.name, crop), None

    def _output(self, job_id: str, request: GenerationRequest, generated: Generated, kept: KeptDevices | None,
                fallback: str | None) -> dict[str, Any]:
        """The ``output`` section: what ran, with which model, and what was kept (or why nothing was)."""
        options, preset, card = request.options, request.preset, self.model.card
        section: dict[str, Any] = {
            "image_key": generated_key(job_id, preset.name),
            "mode": KEEP_DEVICES if kept is not None else DEFAULT_MODE,
            "fast": options.fast,
            "preset": preset.name,
            "adapters": preset.adapters,
            "seed": options.seed,
            "steps": options.steps,
            "guidance": options.guidance,
            "width": options.width,
            "height": options.height,
            "scheduler": options.scheduler,
            "model": card.as_dict(),
            "weights": card.weights,
            "timings": {"inference_ms": round(generated.inference_ms, 1),
                        "denoise_ms": round(generated.denoise_ms, 1), "decode_ms": round(generated.decode_ms, 1),
                        "preset_switch_ms": round(generated.preset_switch_ms, 3)},
            "peak_gpu_mem_bytes": generated.peak_gpu_mem_bytes,
            "locator": self.components.detector.name if self.components.detector is not None else "off",
        }
        if request.preset_fallback is not None:
            section["preset_fallback"] = request.preset_fallback.as_dict()
        if fallback is not None:
            section["fallback"] = fallback
        if kept is not None:
            section.update(kept_devices=[device.as_dict() for device in kept.devices],
                           mask_key=generated_mask_key(job_id), strength=options.strength, detector=kept.detector,
                           masker=kept.masker, crop=[round(v, 6) for v in kept.crop])
        if request.products is not None:
            section["products"] = request.products
        return section


def _load_part(load, setting: str) -> None:
    """Load one optional part; any failure is a FatalError naming the setting that configured it."""
    try:
        load()
    except Exception as exc:
        raise FatalError(f"{setting}: cannot load ({type(exc).__name__}: {str(exc)[:400]}); fix the setting or "
                         "set it off") from None


def _lap(timings: dict[str, float], name: str, started: float) -> None:
    timings[name] = round((time.perf_counter() - started) * 1000, 1)


def _photo_size(blobs: Blobs, key: str) -> Size:
    """The photo's upright size from its header; decoded only when the header cannot tell."""
    return upright_size(blobs.read(key)) or blobs.image(key).size


def encode_png(image, compress_level: int) -> bytes:
    """PNG bytes with no time-dependent metadata, so equal images give equal bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()

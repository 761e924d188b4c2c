"""Generator settings (``DESKGEN_GENERATOR_*``), read once in ``main()``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from deskgen.common.catalogue import categories
from deskgen.common.settings import StageSettings
from deskgen.services.generator.geometry import Size, buckets
from deskgen.services.generator.schedulers import FAST_SCHEDULER_NAMES, SCHEDULER_NAMES

__all__ = ["GeneratorSettings"]

_PRIVATE_LORA = ("Empty: off, and the presets that use it are unavailable. The service LoRAs are private "
                 "(trained by the original team on 366 desk photos): point it at s3:// or file:// weights, or at the "
                 "dev weights (<dev-models>/generator-tiny/loras/{name}). diffusers or Kohya safetensors; a folder "
                 "or a file (hf://<org>/<name>/<file>.safetensors: one file of a Hub repo).")


class GeneratorSettings(StageSettings):
    """Model sources, generation defaults and bounds, and GPU options of the generator."""

    model_config = SettingsConfigDict(env_prefix="DESKGEN_GENERATOR_", extra="ignore", case_sensitive=False)

    model: str = Field("hf://fluently/Fluently-XL-v2",
                       description="Base SDXL pipeline URI (a diffusers folder: model_index.json and components).")
    lora_dalle: str = Field("", description="URI of the 'dalle' LoRA. "
                            + _PRIVATE_LORA.format(name="dalle"))
    lora_ott: str = Field("", description="URI of the 'ott' LoRA. "
                          + _PRIVATE_LORA.format(name="ott"))
    lora_3d: str = Field("", description="URI of the '3d' LoRA. "
                         + _PRIVATE_LORA.format(name="3d"))
    vae: str = Field("", description="Optional URI of a replacement VAE, e.g. an fp16-safe one "
                     "(hf://madebyollin/sdxl-vae-fp16-fix). Empty: the base model's VAE, upcast to fp32 for "
                     "decoding when running in fp16.")

    default_preset: str = Field("ott_3d", description="Preset used when neither the request nor the captioner "
                                "names one (the seed found ott + 3d best for the service); while its adapters are not "
                                "configured, such jobs get 'base' and the output says why.")
    steps: int = Field(30, ge=1, description="Default denoising steps.")
    min_steps: int = Field(1, ge=1, description="Fewest steps a request may ask for.")
    max_steps: int = Field(60, ge=1, description="Most steps a request may ask for.")
    guidance: float = Field(5.0, ge=0, description="Default classifier-free guidance scale (≤ 1 turns CFG off).")
    min_guidance: float = Field(0.0, ge=0, description="Lowest guidance a request may ask for.")
    max_guidance: float = Field(15.0, ge=0, description="Highest guidance a request may ask for.")
    width: int = Field(1024, ge=8, description="Width of the warm-up image, and of a request that names only its "
                       "height.")
    height: int = Field(1024, ge=8, description="Height of the warm-up image, and of a request that names only "
                        "its width.")
    resolution: int | None = Field(None, ge=8, description="Side of the square whose area a request that names no "
                                   "size gets, at the aspect bucket nearest its photo's: 1024 gives the SDXL "
                                   "training resolutions (1024², 1152×896, … 640×1536), smaller values scale them "
                                   "down (64 in dev). Unset: √(width × height).")
    min_side: int = Field(64, ge=8, description="Smallest width or height a request may ask for.")
    max_width: int = Field(1536, ge=8, description="Largest width a request may ask for.")
    max_height: int = Field(1536, ge=8, description="Largest height a request may ask for.")
    size_multiple: int = Field(8, ge=8, description="Width and height must be multiples of this (the VAE needs 8).")
    scheduler: str = Field("default", description=f"Default scheduler, one of {', '.join(SCHEDULER_NAMES)}.")
    allowed_schedulers: list[str] = Field(list(SCHEDULER_NAMES), description="Schedulers a request may name "
                                          "(JSON list).")

    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$",
                        description="auto (cuda when available, else cpu), cpu, cuda or cuda:N.")
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        "auto", description="auto (float16 on cuda, float32 on cpu), float16, bfloat16, float32.")
    fast_switch: bool = Field(True, description="Switch presets by writing each LoRA layer's scale directly "
                              "(layers collected once) instead of diffusers' set_adapters, which walks every module.")
    channels_last: bool = Field(True, description="channels_last memory format for the UNet and VAE on cuda.")
    compile: bool = Field(False, description="torch.compile the UNet (cuda). Each adapter mix and image size "
                          "is its own graph, compiled on first use (or by the warm-up at load).")
    compile_mode: str = Field("max-autotune-no-cudagraphs", description="torch.compile mode.")
    cpu_offload: bool = Field(False, description="enable_model_cpu_offload: keep only the running component on "
                              "the GPU (cards under ~12 GB; slower).")
    vae_tiling: bool = Field(False, description="Decode in tiles to bound VAE memory at large sizes.")
    warmup: bool = Field(True, description="Generate once at load (default size and preset; every preset "
                         "when compile is on), so the first job pays no warm-up.")
    png_compress_level: int = Field(4, ge=0, le=9, description="PNG zlib level of the stored image "
                                    "(0 fastest, 9 smallest).")
    locator: Literal["auto", "owlv2", "detectors", "cam", "off"] = Field(
        "auto", description="How keep_devices finds the user's devices (when the captioned event brings none) and how "
        "the recommended products are located in the stored image: owlv2 (open-vocabulary detection), detectors "
        "(the packaged object detectors of common/detect, real weights that work offline, files in detector_dir), "
        "cam (class-activation maps of the packaged EfficientNet-Lite0 ImageNet model), auto (OWLv2 when its "
        "weights load, else detectors; the choice is logged, in deskgen_generator_component_info and in each "
        "output), off (keep_devices is rejected, products are not located). A locator that cannot load stops "
        "start-up.")
    locator_model: str = Field("", description="Weights of the locator (empty: hf://google/owlv2-base-patch16-ensemble "
                               "for owlv2 and auto, the packaged EfficientNet-Lite0 for cam); dev weights: "
                               "<dev-models>/locator-owlv2-tiny.")
    detector_dir: Path = Field(Path(".cache") / "detectors",
                               description="Folder of the packaged detectors' files (stack/detectors.sh fetches them "
                                           "at set-up; the image: /opt/deskgen/detectors), for locator detectors "
                                           "and auto.")

    # Mode option fast: a few-step LoRA on top of the preset's mix, CFG off.
    fast_lora: str = Field("", description="URI of the few-step LoRA used by requests with fast=true (LCM, TCD, "
                           "SDXL-Lightning or Hyper-SD; one safetensors file or a folder holding one), e.g. "
                           "hf://latent-consistency/lcm-lora-sdxl (lcm) or "
                           "hf://ByteDance/SDXL-Lightning/sdxl_lightning_4step_lora.safetensors (euler_trailing). "
                           "Empty: off, fast requests are rejected (fast_unavailable).")
    fast_scheduler: str = Field("lcm", description=f"Scheduler matching the fast LoRA, one of "
                                f"{', '.join(FAST_SCHEDULER_NAMES)} (euler_trailing for SDXL-Lightning/Hyper-SD).")
    fast_weight: float = Field(1.0, gt=0, le=2, description="Adapter weight of the fast LoRA.")
    fast_steps: int = Field(4, ge=1, description="Default steps of a fast request.")
    fast_max_steps: int = Field(8, ge=1, description="Most steps a fast request may ask for.")

    # Mode keep_devices: inpaint around the user's own devices, found by the locator.
    keep_categories: list[str] = Field(["monitor", "keyboard", "mouse", "laptop", "speaker"], description="Product "
                                       "categories (common/categories.json) that keep_devices keeps (JSON list).")
    reuse_detections: bool = Field(True, description="keep_devices keeps the devices the captioner's object "
                                   "detectors found (the captioned event's detections) instead of running the "
                                   "locator on the photo again; false: the locator looks (e.g. OWLv2, which also "
                                   "sees categories the packaged detectors cannot, such as speakers).")
    strength: float = Field(0.9, gt=0, le=1, description="Default inpainting strength of keep_devices (1: the "
                            "area around the devices starts from pure noise).")
    min_strength: float = Field(0.3, gt=0, le=1, description="Lowest strength a request may ask for.")
    inpaint_unet: str = Field("", description="Optional URI of a dedicated 9-channel SDXL inpainting UNet (a "
                              "diffusers folder, or a pipeline folder with unet/). Empty: the base UNet inpaints.")
    sam: str = Field("", description="SAM checkpoint (transformers) that refines device boxes into masks, e.g. "
                     "hf://facebook/sam-vit-base. Empty: off, the boxes themselves, grown by mask_grow.")
    mask_grow: float = Field(0.02, ge=0, le=0.25, description="How far a device box is grown on each side when "
                             "no SAM is configured, as a fraction of the image's longer side.")
    feather_px: int = Field(6, ge=0, le=64, description="Width of the soft edge outside each kept region where "
                            "the original pixels fade into the generated ones.")

    @field_validator("keep_categories")
    @classmethod
    def _known_categories(cls, value: list[str]) -> list[str]:
        unknown = set(value) - set(categories())
        if unknown:
            raise ValueError(f"unknown categories {sorted(unknown)}; known: {sorted(categories())}")
        return value

    @field_validator("fast_scheduler")
    @classmethod
    def _known_fast_scheduler(cls, value: str) -> str:
        if value not in FAST_SCHEDULER_NAMES:
            raise ValueError(f"must be one of {list(FAST_SCHEDULER_NAMES)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "GeneratorSettings":
        unknown = set(self.allowed_schedulers) - set(SCHEDULER_NAMES)
        if unknown:
            raise ValueError(f"allowed_schedulers: unknown {sorted(unknown)}; known: {list(SCHEDULER_NAMES)}")
        if self.scheduler not in self.allowed_schedulers:
            raise ValueError(f"scheduler {self.scheduler!r} is not in allowed_schedulers")
        checks = [
            (self.min_steps <= self.steps <= self.max_steps, "steps must lie in [min_steps, max_steps]"),
            (self.min_guidance <= self.guidance <= self.max_guidance,
             "guidance must lie in [min_guidance, max_guidance]"),
            (self.min_side <= self.width <= self.max_width, "width must lie in [min_side, max_width]"),
            (self.min_side <= self.height <= self.max_height, "height must lie in [min_side, max_height]"),
            (self.width % self.size_multiple == 0 and self.height % self.size_multiple == 0,
             "width and height must be multiples of size_multiple"),
            (self.size_multiple % 8 == 0, "size_multiple must be a multiple of 8"),
            (self.min_steps <= self.fast_steps <= self.fast_max_steps <= self.max_steps,
             "fast_steps must lie in [min_steps, fast_max_steps] and fast_max_steps ≤ max_steps"),
            (self.min_strength <= self.strength, "strength must be ≥ min_strength"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        for width, height in self.aspect_buckets():
            if width > self.max_width or height > self.max_height:
                raise ValueError(f"resolution {self.bucket_resolution} gives the bucket {width}×{height}, larger "
                                 f"than max_width × max_height")
        return self

    @property
    def bucket_resolution(self) -> int:
        return self.resolution or round(math.sqrt(self.width * self.height))

    def aspect_buckets(self) -> tuple[Size, ...]:
        """The output sizes a request that names no size may get (``geometry.buckets``)."""
        return buckets(self.bucket_resolution, self.size_multiple)

    def lora_uris(self) -> dict[str, str]:
        return {"dalle": self.lora_dalle, "ott": self.lora_ott, "3d": self.lora_3d}

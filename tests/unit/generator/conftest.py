"""Tiny SDXL dev weights built once per session, and one loaded model shared by the generator tests."""

from __future__ import annotations

import io
import re

import pytest
import torch

from deskgen.common.events import Event

from deskgen.services.generator.devweights import FAST_LORA, build_dev
from deskgen.services.generator.components import Placement
from deskgen.services.generator.model import FastLora, GenerationOptions, GeneratorModel
from deskgen.services.generator.settings import GeneratorSettings
from support.blobs import MemoryBlobs

ADAPTERS = ("dalle", "ott", "3d")
CPU = Placement.pick("cpu")


@pytest.fixture(scope="session", autouse=True)
def _few_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return build_dev(tmp_path_factory.mktemp("generator") / "generator-tiny", size="tiny")


@pytest.fixture(scope="session")
def tiny_loras(tiny_dir):
    """Adapter name → its dev LoRA folder."""
    return {name: str(tiny_dir / "loras" / name) for name in ADAPTERS}


@pytest.fixture(scope="session")
def tiny_model(tiny_dir, tiny_loras):
    model = GeneratorModel(str(tiny_dir), tiny_loras, placement=CPU, fast=FastLora(str(tiny_dir / FAST_LORA)))
    model.load()
    return model


@pytest.fixture
def tiny_settings():
    """Small, quick defaults; the masker uses boxes only (tests that want SAM build their own)."""
    return GeneratorSettings(steps=2, width=64, height=64, min_side=32, warmup=False, fast_steps=2, sam="")


@pytest.fixture
def tiny_options():
    return GenerationOptions(steps=2, guidance=5.0, width=64, height=64, scheduler="default", seed=7)


@pytest.fixture
def captioned():
    """(job id, request) → the captioned event the generator consumes; its photo is at uploads/<job>/original.png."""
    return _captioned


@pytest.fixture
def photo_blobs():
    """(job id, photo) → Blobs holding the photo as the job's upload (PNG)."""
    return _photo_blobs


def _captioned(job: str, request: dict) -> Event:
    data = {"job_id": job, "image_key": f"uploads/{job}/original.png", "uploaded_at": "2026-11-25T12:00:00Z",
            "request": request, "timeline": {},
            "captioning": {"prompt": "a desk", "negative_prompt": "", "preset": "basic", "concept": "BASIC"}}
    return Event(kind="captioned", id=f"{job}-c", source="test", time="2026-11-25T12:00:01Z", data=data)


def _photo_blobs(job: str, photo) -> MemoryBlobs:
    buffer = io.BytesIO()
    photo.save(buffer, "PNG")
    return MemoryBlobs({f"uploads/{job}/original.png": buffer.getvalue()})


@pytest.fixture
def to_kohya():
    return _kohya_state_dict


def _kohya_state_dict(diffusers_state: dict) -> dict:
    """Re-key a diffusers-format SDXL LoRA the way Kohya's trainer writes it (lora_unet_/lora_te1_/lora_te2_)."""
    prefixes = {"unet": "lora_unet_", "text_encoder": "lora_te1_text_model_", "text_encoder_2": "lora_te2_"}
    kohya = {}
    for key, tensor in diffusers_state.items():
        component, rest = key.split(".", 1)
        module, direction = re.match(r"(.*)\.lora(?:_linear_layer)?\.(down|up)\.weight", rest).groups()
        name = prefixes[component] + module.replace(".", "_")
        kohya[f"{name}.lora_{direction}.weight"] = tensor
        if direction == "down":
            kohya[f"{name}.alpha"] = torch.tensor(float(tensor.shape[0]))
    return kohya

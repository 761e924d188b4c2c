"""One file of a Hub repo as a LoRA: ``hf://<org>/<name>[@<revision>]/<file>.safetensors`` resolves that file
alone, as SDXL-Lightning and Hyper-SD ship several LoRAs in one repo. No hub here: the files sit in a local
Hugging Face cache, the layout huggingface_hub reads offline; the dev fast LoRA is stored in the diffusers
and in the Kohya key layout."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from deskgen.common.errors import FatalError
from deskgen.common.models import HubRef, ModelSources, hub_ref, identify, resolve
from deskgen.services.generator.components import LORA_FILE, Placement
from deskgen.services.generator.devweights import FAST_LORA
from deskgen.services.generator.model import FastLora, GeneratorModel

CPU = Placement.pick("cpu")
COMMIT = "0123456789abcdef0123456789abcdef01234567"
LIGHTNING = "hf://ByteDance/SDXL-Lightning/sdxl_lightning_4step_lora.safetensors"
HYPER = "hf://ByteDance/Hyper-SD/Hyper-SDXL-8steps-lora.safetensors"


@pytest.fixture
def hub_cache(tiny_dir, tmp_path, to_kohya) -> Path:
    """A model cache whose hub part holds the dev fast LoRA as both repos' files: diffusers keys in the
    SDXL-Lightning repo, Kohya keys in the Hyper-SD repo, each beside another file."""
    cache = tmp_path / "model-cache"
    diffusers_state = load_file(str(tiny_dir / FAST_LORA / LORA_FILE))
    for uri, state in ((LIGHTNING, diffusers_state), (HYPER, to_kohya(diffusers_state))):
        ref = hub_ref(uri)
        repo = cache / "hf" / f"models--{ref.repo_id.replace('/', '--')}"
        snapshot = repo / "snapshots" / COMMIT
        snapshot.mkdir(parents=True)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(COMMIT)
        save_file(state, snapshot / ref.filename)
        save_file(diffusers_state, snapshot / "another_lora.safetensors")
    return cache


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_hub_uris_name_a_repo_its_revision_and_one_file():
    assert hub_ref("hf://org/name") == hub_ref("hf://org/name/") == HubRef("org/name", None, None)
    ref = hub_ref("hf://ByteDance/SDXL-Lightning@v1/loras/sdxl_lightning_4step_lora.safetensors")
    assert (ref.repo_id, ref.revision, ref.filename) == ("ByteDance/SDXL-Lightning", "v1",
                                                         "loras/sdxl_lightning_4step_lora.safetensors")
    with pytest.raises(FatalError, match="hf://<org>/<name>"):
        hub_ref("hf://just-a-name")


def test_a_file_of_a_hub_repo_resolves_to_that_file_alone(hub_cache):
    sources = ModelSources(cache_dir=hub_cache)
    path = resolve(LIGHTNING, sources)
    assert path.is_file() and path.name == "sdxl_lightning_4step_lora.safetensors"
    pinned = LIGHTNING.replace("SDXL-Lightning/", f"SDXL-Lightning@{COMMIT}/")
    assert resolve(pinned, sources) == path
    card = identify(pinned, path)
    assert (card.name, card.version) == ("ByteDance/SDXL-Lightning/sdxl_lightning_4step_lora.safetensors", COMMIT)
    with pytest.raises(FatalError, match="cannot fetch hf://ByteDance/SDXL-Lightning/missing.safetensors"):
        resolve("hf://ByteDance/SDXL-Lightning/missing.safetensors", sources)


@pytest.mark.parametrize("uri, scheduler", [(LIGHTNING, "euler_trailing"), (HYPER, "tcd")])
def test_a_hub_file_in_either_key_layout_is_the_fast_lora(hub_cache, tiny_dir, tiny_model, tiny_options, uri,
                                                         scheduler):
    model = GeneratorModel(str(tiny_dir), {}, placement=CPU, fast=FastLora(uri),
                           sources=ModelSources(cache_dir=hub_cache))
    model.load()
    options = replace(tiny_options, fast=True, guidance=0.0, scheduler=scheduler, steps=4)
    base = model.presets.presets["base"]
    from_hub = np.asarray(model.generate("a desk", "", base, options).image)
    from_folder = np.asarray(tiny_model.generate("a desk", "", base, options).image)
    plain = np.asarray(model.generate("a desk", "", base, replace(options, fast=False)).image)
    np.testing.assert_array_equal(from_hub, from_folder)
    assert not np.array_equal(from_hub, plain)  # the LoRA really is applied

"""The generator's components: every model placed by one device and dtype policy, built from the settings."""

import ast
import pathlib

import pytest
import torch

from deskgen.common.errors import FatalError
from deskgen.services.generator.components import Placement
from deskgen.services.generator.devweights import FAST_LORA, INPAINT_UNET_DIR, SAM_DIR, build_dev_locator
from deskgen.services.generator.locate import OwlDetector
from deskgen.services.generator.settings import GeneratorSettings
from deskgen.services.generator.stage import build_components

SERVICES = pathlib.Path(__file__).resolve().parents[3] / "services"


def _tensors(module: torch.nn.Module):
    return [*module.parameters(), *module.buffers()]


@pytest.fixture(scope="module")
def bf16_components(tiny_dir, tmp_path_factory):
    """Every component of a keep_devices generator (dedicated inpainting UNet, SAM, OWLv2) on cpu/bfloat16: a
    dtype no component defaults to, so a component that skipped the policy shows."""
    settings = GeneratorSettings(
        model=str(tiny_dir), **{f"lora_{name}": str(tiny_dir / "loras" / name) for name in ("dalle", "ott", "3d")},
        fast_lora=str(tiny_dir / FAST_LORA), inpaint_unet=str(tiny_dir / INPAINT_UNET_DIR),
        sam=str(tiny_dir / SAM_DIR), locator="owlv2",
        locator_model=str(build_dev_locator(tmp_path_factory.mktemp("locator") / "owlv2-tiny")),
        device="cpu", dtype="bfloat16", warmup=False)
    components = build_components(settings)
    components.load()
    return components


def test_every_component_shares_one_placement_and_every_weight_follows_it(bf16_components):
    model, masker, detector = bf16_components.model, bf16_components.masker, bf16_components.detector
    assert isinstance(detector, OwlDetector)
    assert model.placement == masker.placement == detector.placement == Placement(torch.device("cpu"), torch.bfloat16)
    pipe, inpaint = model.pipe, model.inpaint_pipe
    assert inpaint.unet is not pipe.unet  # the dedicated inpainting UNet is placed too
    modules = {"unet": pipe.unet, "inpaint_unet": inpaint.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder,
               "text_encoder_2": pipe.text_encoder_2, "sam": masker._model, "locator": detector._model}
    for name, module in modules.items():
        tensors = _tensors(module)
        assert tensors, name
        assert {t.device.type for t in tensors} == {"cpu"}, name
        assert {t.dtype for t in tensors if t.is_floating_point()} == {torch.bfloat16}, name


def test_the_locator_and_sam_take_their_inputs_in_the_placements_dtype(bf16_components):
    from PIL import Image

    image = Image.new("RGB", (64, 48), (120, 130, 140))
    found = bf16_components.detector.detect(image, ["monitor"])
    assert set(found) == {"monitor"}
    mask = bf16_components.masker.mask(image, [(0.2, 0.2, 0.6, 0.7)])
    assert mask.size == image.size and mask.getextrema()[1] == 255


def test_auto_placement_is_cuda_float16_when_there_is_a_gpu_else_cpu_float32():
    placement = Placement.pick()
    cuda = torch.cuda.is_available()
    assert (placement.device.type, placement.dtype) == (("cuda", torch.float16) if cuda else ("cpu", torch.float32))
    assert Placement.pick("cpu", "bfloat16") == Placement(torch.device("cpu"), torch.bfloat16)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_stops_start_up():
    with pytest.raises(FatalError, match="CUDA is not available"):
        Placement.pick("cuda")


def test_inputs_move_to_the_device_floats_take_the_dtype_and_ids_stay_integers():
    placed = Placement(torch.device("cpu"), torch.bfloat16).inputs(
        {"pixel_values": torch.zeros(1, 3, 4, 4), "input_ids": torch.ones(1, 5, dtype=torch.long), "note": "x"})
    assert (placed["pixel_values"].dtype, placed["input_ids"].dtype, placed["note"]) == (
        torch.bfloat16, torch.long, "x")


def test_no_serving_module_imports_a_dev_weights_builder():
    importers = []
    for path in SERVICES.rglob("*.py"):
        if path.name == "devweights.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if any(name.endswith("devweights") for name in names):
                importers.append(str(path.relative_to(SERVICES)))
    assert importers == []


def test_building_the_components_resolves_nothing_loading_does(monkeypatch, tmp_path):
    """Nothing downloads before /healthz: hub URIs for every part build fine; resolving happens in load()."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DESKGEN_MODEL_CACHE", str(tmp_path))
    settings = GeneratorSettings(model="hf://nowhere/sdxl", lora_ott="hf://nowhere/ott",
                                 fast_lora="hf://nowhere/fast/lora.safetensors", sam="hf://nowhere/sam",
                                 locator="auto", device="cpu", warmup=False)
    components = build_components(settings)
    assert not components.model.loaded and list(tmp_path.iterdir()) == []
    with pytest.raises(FatalError, match="cannot fetch hf://nowhere/sdxl"):
        components.load()


def test_the_parts_report_what_runs_where(bf16_components):
    parts = {part["component"]: part for part in bf16_components.info()}
    assert parts["locator"]["kind"] == "owlv2" and parts["locator"]["weights"] == "dev-random"
    assert parts["sam"]["kind"] == "sam" and parts["inpaint_unet"]["kind"] == "unet"
    assert parts["sdxl"]["weights"] == "dev-random" and parts["fast_lora"]["kind"] == "lora"
    assert {part["placement"] for part in parts.values()} == {"cpu/bfloat16"}

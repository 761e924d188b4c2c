"""Optional parts are optional: a generator with the base model only starts, serves `base`, says what is off
(log, metrics, output) and rejects the jobs that need a missing part, each with its own reason."""

import numpy as np
import pytest
from prometheus_client import REGISTRY

from PIL import Image

from deskgen.common.errors import FatalError, InvalidInputError
from deskgen.services.generator.components import Placement
from deskgen.services.generator.locate import OwlDetector
from deskgen.services.generator.masks import DeviceMasker
from deskgen.services.generator.model import GeneratorModel
from deskgen.services.generator.settings import GeneratorSettings
from deskgen.services.generator.stage import Components, GeneratorStage

CPU = Placement.pick("cpu")


@pytest.fixture(scope="module")
def base_stage(tiny_dir):
    """A generator configured with the base model only: no LoRA, no fast LoRA, no SAM, no locator."""
    settings = GeneratorSettings(steps=2, width=64, height=64, min_side=32, warmup=True, fast_steps=2)
    stage = GeneratorStage(Components(GeneratorModel(str(tiny_dir), {}, placement=CPU),
                                      DeviceMasker("", grow=0.02, placement=CPU)), settings)
    stage.load()  # warms up on base: the default preset ott_3d has no adapters here
    return stage


def _metric(name: str, **labels) -> float | None:
    return REGISTRY.get_sample_value(name, {"stage": "generator", **labels})


def test_the_base_model_alone_starts_and_reports_what_is_off(base_stage, caplog):
    assert base_stage.model.available == ["base"]
    assert _metric("deskgen_generator_preset_available", preset="base") == 1
    assert _metric("deskgen_generator_preset_available", preset="ott_3d") == 0
    assert _metric("deskgen_generator_component_info", component="sdxl", kind="sdxl", weights="dev-random",
                   uri=base_stage.model.base_uri, placement="cpu/float32") == 1
    for component in ("lora_dalle", "lora_ott", "lora_3d", "fast_lora", "inpaint_unet", "sam", "locator"):
        assert _metric("deskgen_generator_component_info", component=component, kind="off", weights="", uri="",
                       placement="") == 1, component
    with caplog.at_level("INFO", logger="deskgen.services.generator.stage"):
        base_stage._report_parts()
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("generator parts")]
    assert "presets available ['base']" in line and "'oil': ['dalle', 'ott']" in line
    assert "fast off" in line and "keep_devices off" in line


@pytest.mark.parametrize("captioning_preset, default", [("basic", "ott_3d"), (None, "ott_3d")])
def test_a_preset_nobody_asked_for_by_name_falls_back_to_base_visibly(base_stage, captioned, photo_blobs,
                                                                      captioning_preset, default):
    event = captioned("job-base", {})
    event.data["captioning"]["preset"] = captioning_preset
    output = base_stage.handle(event, photo_blobs("job-base", Image.new("RGB", (64, 48), "gray"))).section
    assert (output["preset"], output["adapters"], output["image_key"]) == ("base", {}, "generated/job-base/base.png")
    assert output["preset_fallback"] == {
        "requested": captioning_preset or default, "used": "base",
        "chosen_by": "captioner" if captioning_preset else "default", "missing_adapters": ["ott", "3d"]}
    assert output["locator"] == "off" and output["weights"] == "dev-random"


@pytest.mark.parametrize("request_, reason", [
    ({"preset": "oil"}, "preset_unavailable"), ({"fast": True}, "fast_unavailable"),
    ({"mode": "keep_devices"}, "keep_devices_unavailable")])
def test_a_job_that_needs_a_missing_part_is_rejected_with_its_own_reason(base_stage, captioned, photo_blobs,
                                                                         request_, reason):
    with pytest.raises(InvalidInputError) as caught:
        base_stage.handle(captioned("job-x", request_), photo_blobs("job-x", Image.new("RGB", (64, 64))))
    assert (caught.value.reason, caught.value.status) == (reason, "rejected")


def test_base_on_a_model_with_adapters_draws_what_the_base_model_alone_draws(base_stage, tiny_model, tiny_options):
    presets = tiny_model.presets.presets
    alone = np.asarray(base_stage.model.generate("a desk", "", presets["base"], tiny_options).image)
    tiny_model.generate("a desk", "", presets["mix"], tiny_options)  # adapters active before
    with_adapters = tiny_model.generate("a desk", "", presets["base"], tiny_options)
    mixed = np.asarray(tiny_model.generate("a desk", "", presets["mix"], tiny_options).image)
    assert np.array_equal(np.asarray(with_adapters.image), alone) and not np.array_equal(mixed, alone)


@pytest.mark.parametrize("part, setting", [
    ("locator", "DESKGEN_GENERATOR_LOCATOR=owlv2"), ("sam", "DESKGEN_GENERATOR_SAM=file:///nowhere/sam")])
def test_a_configured_part_that_cannot_load_stops_start_up_naming_its_setting(tiny_dir, part, setting):
    masker = DeviceMasker("file:///nowhere/sam" if part == "sam" else "", grow=0.02, placement=CPU)
    detector = OwlDetector("file:///nowhere/owlv2", placement=CPU) if part == "locator" else None
    components = Components(GeneratorModel(str(tiny_dir), {}, placement=CPU), masker, detector)
    with pytest.raises(FatalError) as caught:
        components.load()
    message = str(caught.value)
    assert message.startswith(f"{setting}: cannot load") and "/nowhere/" in message and "\n" not in message

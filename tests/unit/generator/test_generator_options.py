import json
from importlib.resources import files

import pytest

from deskgen.common.cli import _parser
from deskgen.common.errors import InvalidInputError
from deskgen.common.request import MODES
from deskgen.services.generator.presets import load_presets
from deskgen.services.generator.settings import GeneratorSettings
from deskgen.services.generator.request import Parts, derive_seed, parse_request, resolve_options, resolve_preset


def test_defaults_come_from_the_settings_and_the_seed_from_the_job_id(tiny_settings):
    options = resolve_options({}, tiny_settings, "job-1")
    assert (options.steps, options.width, options.height, options.scheduler) == (2, 64, 64, "default")
    assert options.guidance == tiny_settings.guidance
    assert options.seed == derive_seed("job-1")


def test_request_options_within_bounds_win(tiny_settings):
    request = {"steps": 4, "guidance": 3, "width": 128, "height": 96, "scheduler": "euler_a", "seed": 42}
    options = resolve_options(request, tiny_settings, "job-1")
    assert (options.steps, options.guidance, options.width, options.height, options.scheduler, options.seed) == (
        4, 3.0, 128, 96, "euler_a", 42)


@pytest.mark.parametrize("field, value", [
    ("steps", 0), ("steps", 61), ("steps", "10"), ("steps", 2.5), ("steps", True),
    ("guidance", -0.5), ("guidance", 15.5), ("guidance", float("nan")), ("guidance", "7"),
    ("width", 2048), ("width", 100), ("width", 16), ("height", 1600), ("height", 68),
    ("scheduler", "lms"), ("scheduler", None),
    ("seed", -1), ("seed", 2**32), ("seed", "1"),
])
def test_each_out_of_bounds_field_is_rejected_naming_the_field(tiny_settings, field, value):
    with pytest.raises(InvalidInputError) as caught:
        resolve_options({field: value}, tiny_settings, "job-1")
    assert caught.value.reason == "options_out_of_bounds"
    assert caught.value.status == "rejected"
    assert caught.value.detail.startswith(f"{field}=")


def test_a_scheduler_outside_the_allowed_list_is_rejected():
    settings = GeneratorSettings(allowed_schedulers=["default", "euler"], warmup=False)
    with pytest.raises(InvalidInputError, match="scheduler"):
        resolve_options({"scheduler": "ddim"}, settings, "job-1")


def test_settings_refuse_a_default_outside_their_own_bounds():
    with pytest.raises(ValueError, match="steps"):
        GeneratorSettings(steps=100, max_steps=60)


def test_seed_derivation_is_stable_and_fits_four_bytes():
    assert derive_seed("job-1") == derive_seed("job-1") == int.from_bytes(
        __import__("hashlib").sha256(b"job-1").digest()[:4], "big")
    assert derive_seed("job-1") != derive_seed("job-2")
    assert 0 <= derive_seed("x") < 2**32


def test_preset_comes_from_the_request_then_the_captioner_then_the_default():
    table = load_presets()
    assert resolve_preset(table, {"preset": "mix"}, {"preset": "oil"}, "ott_3d")[0].name == "mix"
    assert resolve_preset(table, {}, {"preset": "oil"}, "ott_3d")[0].name == "oil"
    assert resolve_preset(table, {}, {}, "ott_3d") == (table.presets["ott_3d"], None)


def test_the_base_preset_has_no_adapter_and_needs_none():
    table = load_presets()
    assert table.presets["base"].mix == () and table.presets["base"].group == "base"
    missing = table.missing([])
    assert "base" not in missing and set(missing) == set(table.names()) - {"base"}
    assert missing["oil"] == ["dalle", "ott"] and table.missing(["ott", "3d"]).keys() == {
        "dalle_only", "dalle_ott", "dalle_3d", "mix", "mspaint", "oil", "cartoon", "weekday"}


def test_a_preset_the_request_names_whose_adapters_are_missing_is_rejected_naming_them(tiny_settings):
    parts = Parts(unavailable=load_presets().missing(["ott", "3d"]))
    with pytest.raises(InvalidInputError) as caught:
        parse_request(_data({"preset": "oil"}), tiny_settings, load_presets(), "job-1", parts)
    assert (caught.value.reason, caught.value.status) == ("preset_unavailable", "rejected")
    assert "['dalle']" in caught.value.detail and "'ott_3d'" in caught.value.detail
    assert parse_request(_data({"preset": "ott_3d"}), tiny_settings, load_presets(), "job-1", parts).preset.name == \
        "ott_3d"


@pytest.mark.parametrize("captioning, default, chosen_by", [
    ({"prompt": "a desk", "preset": "oil"}, "ott_3d", "captioner"), ({"prompt": "a desk"}, "oil", "default")])
def test_a_preset_the_request_did_not_name_falls_back_to_base_visibly(captioning, default, chosen_by):
    settings = GeneratorSettings(default_preset=default, warmup=False)
    parts = Parts(unavailable=load_presets().missing(["ott", "3d"]))
    parsed = parse_request(_data({}, captioning), settings, load_presets(), "job-1", parts)
    assert parsed.preset.name == "base" and parsed.preset.mix == ()
    assert parsed.preset_fallback.as_dict() == {"requested": "oil", "used": "base", "chosen_by": chosen_by,
                                                "missing_adapters": ["dalle"]}


@pytest.mark.parametrize("request_, parts, reason", [
    ({"fast": True}, Parts(fast=False), "fast_unavailable"),
    ({"mode": "keep_devices"}, Parts(locator=False), "keep_devices_unavailable"),
])
def test_a_part_that_is_off_rejects_the_jobs_that_need_it_with_its_own_reason(tiny_settings, request_, parts,
                                                                             reason):
    with pytest.raises(InvalidInputError) as caught:
        parse_request(_data(request_), tiny_settings, load_presets(), "job-1", parts)
    assert (caught.value.reason, caught.value.status) == (reason, "rejected")
    assert parse_request(_data(request_), tiny_settings, load_presets(), "job-1", Parts()).options is not None


def test_an_unknown_preset_is_rejected():
    with pytest.raises(InvalidInputError) as caught:
        resolve_preset(load_presets(), {"preset": "pixel_art"}, {}, "ott_3d")
    assert (caught.value.reason, caught.value.status) == ("unknown_preset", "rejected")


def test_fast_defaults_to_its_steps_cfg_off_and_the_fast_scheduler(tiny_settings):
    options = resolve_options({"fast": True}, tiny_settings, "job-1")
    assert (options.fast, options.steps, options.guidance, options.scheduler) == (True, 2, 0.0, "lcm")
    assert resolve_options({"fast": True, "steps": 8, "guidance": 1}, tiny_settings, "job-1").steps == 8


@pytest.mark.parametrize("request_, field", [
    ({"fast": "yes"}, "fast"), ({"fast": True, "steps": 9}, "steps"), ({"fast": True, "guidance": 1.5}, "guidance"),
    ({"fast": True, "scheduler": "euler"}, "scheduler"), ({"mode": "paint"}, "mode"), ({"strength": 0.1}, "strength"),
    ({"strength": 1.5}, "strength"), ({"mode": "keep_devices", "steps": 1, "strength": 0.5}, "strength"),
])
def test_fast_mode_and_strength_bounds_are_enforced(tiny_settings, request_, field):
    with pytest.raises(InvalidInputError) as caught:
        parse_request(_data(request_), tiny_settings, load_presets(), "job-1")
    assert caught.value.reason == "options_out_of_bounds" and caught.value.detail.startswith(f"{field}=")


def test_the_optional_parts_are_off_by_default(monkeypatch):
    for part in ("LORA_DALLE", "LORA_OTT", "LORA_3D", "FAST_LORA", "SAM", "INPAINT_UNET"):
        monkeypatch.delenv(f"DESKGEN_GENERATOR_{part}", raising=False)
    settings = GeneratorSettings(warmup=False)
    assert settings.lora_uris() == {"dalle": "", "ott": "", "3d": ""}
    assert (settings.fast_lora, settings.sam, settings.inpaint_unet) == ("", "", "")


def _data(request, captioning=None):
    captioning = {"prompt": "a desk", "preset": "basic"} if captioning is None else captioning
    return {"request": request, "captioning": captioning}


def test_a_request_is_parsed_once_into_a_typed_request(tiny_settings):
    parsed = parse_request(_data({"mode": "keep_devices", "fast": True, "preset": "mix"},
                                 {"prompt": "a desk", "negative_prompt": "blurry", "products": []}),
                           tiny_settings, load_presets(), "job-1")
    assert (parsed.prompt, parsed.negative_prompt, parsed.preset.name, parsed.mode) == (
        "a desk", "blurry", "mix", "keep_devices")
    assert parsed.keeps_devices and parsed.options.fast and parsed.products == []
    restyle = parse_request(_data({}), tiny_settings, load_presets(), "job-1")
    assert (restyle.mode, restyle.keeps_devices, restyle.products) == ("restyle", False, None)


@pytest.mark.parametrize("captioning", [{}, {"prompt": "  "}, {"prompt": 3}])
def test_a_request_without_a_prompt_fails_the_job(tiny_settings, captioning):
    with pytest.raises(InvalidInputError) as caught:
        parse_request(_data({}, captioning), tiny_settings, load_presets(), "job-1")
    assert (caught.value.reason, caught.value.status) == ("caption_missing", "failed")


def test_the_strength_bound_of_inpainting_applies_only_to_keep_devices(tiny_settings):
    low = {"steps": 1, "strength": 0.5}
    assert parse_request(_data(low), tiny_settings, load_presets(), "job-1").options.strength == 0.5
    with pytest.raises(InvalidInputError, match="strength"):
        parse_request(_data({**low, "mode": "keep_devices"}), tiny_settings, load_presets(), "job-1")


def test_the_modes_come_from_the_schema_and_the_cli_offers_them():
    schema = json.loads((files("deskgen.common") / "schemas" / "defs.json").read_text())["$defs"]
    assert MODES == tuple(schema["mode"]["enum"]) == ("restyle", "keep_devices")
    assert schema["request"]["properties"]["mode"]["$ref"] == schema["output"]["properties"]["mode"]["$ref"] == (
        "#/$defs/mode")
    submit = next(action for action in _parser()._subparsers._group_actions[0].choices["submit"]._actions
                  if action.dest == "mode")
    assert tuple(submit.choices) == MODES

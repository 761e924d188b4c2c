import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from deskgen.services.generator.components import Placement, RuntimeOptions
from deskgen.services.generator.model import GeneratorModel

CPU = Placement.pick("cpu")

TRANSITIONS = ["ott_3d", "dalle_only", "base", "mix", "3d_only", "dalle_ott", "ott_3d"]


def _pixels(model, preset, options):
    return np.asarray(model.generate("a clean desk", "blurry", model.presets.presets[preset], options).image)


def test_fast_switch_gives_the_same_images_as_set_adapters(tiny_dir, tiny_loras, tiny_model, tiny_options):
    reference = GeneratorModel(str(tiny_dir), tiny_loras,
                               placement=CPU, options=RuntimeOptions(fast_switch=False))
    reference.load()
    images = {}
    for preset in TRANSITIONS:
        fast, slow = _pixels(tiny_model, preset, tiny_options), _pixels(reference, preset, tiny_options)
        np.testing.assert_array_equal(fast, slow, err_msg=preset)
        images[preset] = fast
    assert not np.array_equal(images["ott_3d"], images["dalle_only"])  # the adapters really change the image


def test_activating_the_active_preset_costs_nothing(tiny_model):
    mix = tiny_model.presets.presets["mix"]
    tiny_model.activate(mix)
    assert tiny_model.activate(mix) == 0.0
    assert tiny_model.activate(tiny_model.presets.presets["oil"]) > 0.0


def test_kohya_format_loras_load_like_diffusers_ones(tiny_dir, tiny_loras, tiny_model, tiny_options, tmp_path,
                                                    to_kohya):
    kohya = {}
    for name, folder in tiny_loras.items():
        kohya[name] = tmp_path / f"{name}.safetensors"
        save_file(to_kohya(load_file(f"{folder}/pytorch_lora_weights.safetensors")), kohya[name])
    model = GeneratorModel(str(tiny_dir), {name: str(path) for name, path in kohya.items()},
                           placement=CPU)
    model.load()
    np.testing.assert_array_equal(_pixels(model, "mix", tiny_options), _pixels(tiny_model, "mix", tiny_options))


def test_the_dev_weights_are_reported_as_such(tiny_model):
    assert tiny_model.card.weights == "dev-random"
    assert tiny_model.card.version == "dev-random-tiny-seed0"
    assert tiny_model.card.name == "generator-tiny"


@pytest.mark.parametrize("scheduler", ["euler", "euler_a", "dpmpp_2m_karras", "ddim", "unipc"])
def test_every_scheduler_generates(tiny_model, tiny_options, scheduler):
    options = type(tiny_options)(**{**tiny_options.__dict__, "scheduler": scheduler})
    assert _pixels(tiny_model, "mix", options).shape == (64, 64, 3)

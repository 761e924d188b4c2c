import json

import pytest

from deskgen.common.errors import FatalError
from deskgen.services.generator.presets import evaluation_prompts, load_presets

SEED_PRESETS = {
    "dalle_only": {"dalle": 1.0},
    "ott_only": {"ott": 1.0},
    "3d_only": {"3d": 1.0},
    "dalle_ott": {"dalle": 0.7, "ott": 0.5},
    "dalle_3d": {"dalle": 0.7, "3d": 0.5},
    "ott_3d": {"ott": 0.7, "3d": 0.5},
    "mix": {"dalle": 0.6, "ott": 0.4, "3d": 0.4},
}


def test_the_seven_seed_presets_have_exactly_the_seed_weights():
    table = load_presets()
    assert {name: table.presets[name].adapters for name in table.names("seed")} == SEED_PRESETS
    assert table.names("seed") == list(SEED_PRESETS)


def test_every_captioner_concept_has_a_preset_built_from_the_three_adapters():
    table = load_presets()
    assert table.names("concept") == ["basic", "simple", "mspaint", "oil", "cartoon", "weekday"]
    for name in table.names("concept"):
        assert set(table.presets[name].adapters) <= {"dalle", "ott", "3d"}


def test_a_preset_naming_an_unknown_adapter_is_refused(tmp_path):
    bad = {"adapters": ["dalle"], "presets": {"x": {"group": "seed", "adapters": {"pixel": 1.0}}}}
    path = tmp_path / "presets.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(FatalError, match="unknown adapters"):
        load_presets(path)


def test_the_evaluation_uses_the_seed_prompts_and_negative_prompt():
    prompts, negative = evaluation_prompts()
    assert len(prompts) == 2 and prompts[0].startswith("A clean, modern desk setup in a white-toned")
    assert negative.startswith("blurry, low quality") and negative.endswith("sketch")

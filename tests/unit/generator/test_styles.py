"""The styles table's records: keys, values and adapters checked as the generator's feed decodes them."""

from __future__ import annotations

import pytest

from deskgen.common.errors import InvalidInputError
from deskgen.common.tables import Change
from deskgen.services.generator.components import lora_file
from deskgen.services.generator.styles import AdapterRow, PresetRow, StyleTable, file_sha256


@pytest.fixture
def adapter(tiny_loras):
    path = lora_file(tiny_loras["ott"])
    return AdapterRow(name="warm", uri=f"file://{tiny_loras['ott']}", sha256=file_sha256(path)), path


def test_an_adapter_is_resolved_and_checked(adapter):
    row, path = adapter
    decoded = StyleTable().decode("adapter:warm", row.model_dump_json().encode(), None)
    assert decoded.path == str(path) and decoded.sha256 == row.sha256 and decoded.weight == 1.0


@pytest.mark.parametrize("key, value, reason", [
    ("warm", b"{}", "style_key_invalid"),
    ("adapter:Warm", b"{}", "style_key_invalid"),
    ("adapter:warm", b"not json", "style_record_invalid"),
    ("adapter:warm", b'{"name": "warm", "uri": "file:///x", "sha256": "abc"}', "style_record_invalid"),
    ("adapter:cold", None, "style_record_invalid"),  # the row's name differs from its key's
    ("preset:cosy", b'{"name": "cosy", "adapters": {}}', "style_record_invalid"),
    ("preset:cosy", b'{"name": "cosy", "adapters": {"warm": 3}}', "style_record_invalid"),
    ("preset:cosy", b'{"name": "cosy", "adapters": {"warm": 1}, "extra": 1}', "style_record_invalid"),
])
def test_bad_records_are_refused_with_their_reason(adapter, key, value, reason):
    value = value if value is not None else adapter[0].model_dump_json().encode()
    with pytest.raises(InvalidInputError) as refused:
        StyleTable().decode(key, value, None)
    assert refused.value.reason == reason


def test_a_differing_file_or_a_missing_one_is_refused(adapter):
    row = adapter[0]
    for changed, reason in [({"sha256": "f" * 64}, "adapter_sha256_mismatch"),
                            ({"uri": "file:///nowhere/lora"}, "adapter_unresolved")]:
        with pytest.raises(InvalidInputError) as refused:
            StyleTable().decode("adapter:warm", row.model_copy(update=changed).model_dump_json().encode(), None)
        assert refused.value.reason == reason


def test_changes_queue_in_order_until_taken():
    table = StyleTable()
    preset = PresetRow(name="cosy", adapters={"warm": 0.5})
    table.apply([Change("preset:cosy", preset), Change("adapter:warm", None)])
    table.apply([Change("preset:cosy", None)])
    assert table.rows == {}
    assert [(c.key, c.value) for c in table.take()] == [("preset:cosy", preset), ("adapter:warm", None),
                                                        ("preset:cosy", None)]
    assert table.take() == []


def test_table_presets_extend_the_file_and_name_what_they_lack():
    from deskgen.services.generator.presets import load_presets

    table = load_presets().with_rows(["warm"], {"cosy": {"warm": 0.5, "cold": 1.0}, "ott_only": {"warm": 1.0}})
    assert table.adapters[:3] == ("dalle", "ott", "3d") and set(table.adapters[3:]) == {"warm", "cold"}
    assert table.presets["cosy"].group == "table" and table.presets["ott_only"].adapters == {"warm": 1.0}
    assert table.missing(["warm"])["cosy"] == ["cold"] and "ott_only" not in table.missing(["warm"])
    assert table.presets["base"].mix == ()


def test_an_adapter_loads_and_unloads_without_a_restart(tiny_dir, tiny_loras, tiny_options):
    from deskgen.services.generator.model import GeneratorModel
    from deskgen.services.generator.presets import load_presets

    from conftest import CPU

    model = GeneratorModel(str(tiny_dir), {}, placement=CPU)
    model.load()
    model.set_presets(load_presets().with_rows(["warm"], {"warm": {"warm": 1.0}}))
    assert "warm" in model.unavailable
    base = model.generate("a desk", "", model.presets.presets["base"], tiny_options).image
    path = str(lora_file(tiny_loras["ott"]))
    model.load_adapter("warm", path, "file://warm")
    assert "warm" not in model.unavailable
    warm = model.generate("a desk", "", model.presets.presets["warm"], tiny_options).image
    assert warm.tobytes() != base.tobytes()
    with pytest.raises(Exception):
        model.load_adapter("warm", str(tiny_dir / "unet" / "diffusion_pytorch_model.safetensors"), "file://unet")
    assert model.lora_uris["warm"] == "file://warm", "a file that is no LoRA leaves the adapter loaded before"
    model.unload_adapter("warm")
    assert model.unavailable["warm"] == ["warm"]
    again = model.generate("a desk", "", model.presets.presets["base"], tiny_options).image
    assert again.tobytes() == base.tobytes(), "unloading restores the base model exactly"

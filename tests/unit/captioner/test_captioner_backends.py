"""The captioner's CPU paths on tiny dev weights: ONNX Runtime against torch, the ISA-driven choice."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from deskgen.common.errors import FatalError
from deskgen.services.captioner.devweights import build_dev
from deskgen.services.captioner.model import CPU_PATHS, BlipCaptioner, cpu_isa
from deskgen.services.captioner.onnx_blip import int8_weight_type
from deskgen.services.captioner.settings import SEED_PROMPTS


def _photo(seed: int) -> Image.Image:
    pixels = torch.randint(0, 256, (60, 80, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return Image.fromarray(pixels.numpy(), "RGB")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.set_num_threads(1)
    return build_dev(tmp_path_factory.mktemp("dev-models") / "captioner-tiny", size="tiny")


def _captioner(weights, tmp_path, **options) -> BlipCaptioner:
    model = BlipCaptioner(weights.as_uri(), SEED_PROMPTS, max_new_tokens=8, onnx_cache=tmp_path / "onnx", threads=1,
                          **options)
    model.load()
    return model


def test_onnxruntime_fp32_decodes_the_tokens_torch_decodes_and_reuses_its_export(weights, tmp_path):
    photos = [_photo(i) for i in range(3)]
    torch_fp32 = _captioner(weights, tmp_path)
    onnx_fp32 = _captioner(weights, tmp_path, backend="onnxruntime", precision="fp32")
    assert onnx_fp32._onnx.export_s > 0
    assert [r.captions for r in onnx_fp32.caption_many(photos)] == [r.captions for r in torch_fp32.caption_many(photos)]
    pixels = torch.cat([torch_fp32.pixel_values(p) for p in photos])
    sequences = torch_fp32.generate(torch_fp32.encode_image(pixels))
    expected = torch_fp32.next_token_logits(torch_fp32.encode_image(pixels), sequences)
    got = onnx_fp32.next_token_logits(onnx_fp32.encode_image(pixels), sequences)
    assert got.shape == expected.shape == (9, sequences.shape[1] - torch_fp32._prompt_ids.shape[1], 30524)
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-4)
    again = _captioner(weights, tmp_path, backend="onnxruntime", precision="fp32")
    assert again._onnx.export_s == 0 and again._onnx.folder == onnx_fp32._onnx.folder


def test_onnxruntime_int8_captions_with_the_weights_the_isa_suits(weights, tmp_path):
    model = _captioner(weights, tmp_path, backend="onnxruntime", precision="auto")
    assert model.precision == "int8"
    assert model._onnx.folder.name.endswith(int8_weight_type(model.isa).lower())
    captions = model.caption(_photo(0)).captions
    assert [c.prompt for c in captions] == list(SEED_PROMPTS) and captions[0].text.startswith("this is a photo of")


def test_auto_takes_the_isas_cpu_path_and_explicit_settings_win(weights):
    auto = BlipCaptioner(weights.as_uri(), SEED_PROMPTS, backend="auto", precision="auto")
    assert auto.isa == cpu_isa() and (auto.backend, auto.precision) == CPU_PATHS[auto.isa]
    explicit = BlipCaptioner(weights.as_uri(), SEED_PROMPTS, backend="auto", precision="fp32")
    assert (explicit.backend, explicit.precision) == ("torch", "fp32")
    assert int8_weight_type("avx2") == "QUInt8" and int8_weight_type("avx512_vnni") == "QInt8"


@pytest.mark.parametrize("options", [{"num_beams": 2}, {"precision": "bf16"}, {"device": "cuda"}])
def test_onnxruntime_refuses_what_it_does_not_run(weights, options):
    with pytest.raises(FatalError, match="onnxruntime backend"):
        BlipCaptioner(weights.as_uri(), SEED_PROMPTS, backend="onnxruntime", **options)


def test_the_stage_reports_its_path_in_the_log_and_a_metric(weights, tmp_path, caplog):
    from prometheus_client import REGISTRY

    from deskgen.services.captioner.stage import CaptionerStage

    captioner = BlipCaptioner(weights.as_uri(), SEED_PROMPTS, backend="onnxruntime", precision="fp32",
                              onnx_cache=tmp_path / "onnx", threads=1)
    with caplog.at_level("INFO", logger="deskgen.captioner"):
        CaptionerStage(captioner, batch_max=3).load()
    labels = {"stage": "captioner", "backend": "onnxruntime", "precision": "fp32", "isa": captioner.isa}
    assert REGISTRY.get_sample_value("deskgen_captioner_backend_info", labels) == 1
    assert f"BLIP on onnxruntime, fp32 (chosen for {captioner.isa}), batches of up to 3 photos" in caplog.text


def test_the_static_cache_decodes_what_the_dynamic_decode_does(weights):
    """Eager (no compile: the same module torch.compile wraps): tokens and teacher-forced logits of torch's."""
    from deskgen.services.captioner.static_blip import StaticBlip

    photos = [_photo(i) for i in range(2)]
    dynamic = BlipCaptioner(weights.as_uri(), SEED_PROMPTS, max_new_tokens=8, min_new_tokens=3)
    dynamic.load()
    static = BlipCaptioner(weights.as_uri(), SEED_PROMPTS, max_new_tokens=8, min_new_tokens=3, backend="torch_compile")
    static.load()
    assert static.model is not None
    static._static = StaticBlip(static.model, compiled=False)
    pixels = torch.cat([dynamic.pixel_values(p) for p in photos])
    sequences = dynamic.generate(dynamic.encode_image(pixels))
    assert torch.equal(static.generate(static.encode_image(pixels)), sequences)
    expected = dynamic.next_token_logits(dynamic.encode_image(pixels), sequences)
    torch.testing.assert_close(static.next_token_logits(static.encode_image(pixels), sequences), expected,
                               atol=1e-5, rtol=1e-5)
    assert [r.captions for r in static.caption_many(photos)] == [r.captions for r in dynamic.caption_many(photos)]


def test_torch_compile_compiles_and_captions_as_torch(weights):
    photos = [_photo(i) for i in range(3)]
    compiled = BlipCaptioner(weights.as_uri(), SEED_PROMPTS, max_new_tokens=8, backend="torch_compile")
    compiled.load()
    torch_fp32 = BlipCaptioner(weights.as_uri(), SEED_PROMPTS, max_new_tokens=8)
    torch_fp32.load()
    assert (compiled.backend, compiled.precision) == ("torch_compile", "fp32")
    assert [r.captions for r in compiled.caption_many(photos)] == [r.captions for r in torch_fp32.caption_many(photos)]


@pytest.mark.parametrize("options", [{"num_beams": 2}, {"precision": "int8"}])
def test_torch_compile_refuses_what_it_does_not_run(weights, options):
    with pytest.raises(FatalError, match="torch_compile backend"):
        BlipCaptioner(weights.as_uri(), SEED_PROMPTS, backend="torch_compile", **options)


def test_settings_select_the_torch_compile_backend(monkeypatch):
    from deskgen.services.captioner.settings import CaptionerSettings
    from deskgen.services.captioner.stage import build_captioner

    monkeypatch.setenv("DESKGEN_CAPTIONER_BACKEND", "torch_compile")
    monkeypatch.setenv("DESKGEN_CAPTIONER_PRECISION", "fp32")
    captioner = build_captioner(CaptionerSettings())
    assert (captioner.backend, captioner.precision) == ("torch_compile", "fp32")

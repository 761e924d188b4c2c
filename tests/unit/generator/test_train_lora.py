"""``deskgen train lora`` on the tiny dev SDXL: two drawn styles, loss, layouts, resume, bad data."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from deskgen.common.errors import FatalError
from deskgen.services.generator.components import LORA_FILE
from deskgen.services.generator.train_lora import CARD_FILE, LoraTraining, train_lora
from support.drawn_styles import draw_styles


@pytest.fixture(scope="module")
def job(tiny_dir, tmp_path_factory):
    data = tmp_path_factory.mktemp("styles")
    draw_styles(data)
    return LoraTraining(base=f"file://{tiny_dir}", data=str(data), out=tmp_path_factory.mktemp("lora"),
                        name="stripes", rank=4, alpha=4, learning_rate=2e-3, steps=40, resolution=64,
                        checkpoint_every=20, validation_steps=2)


@pytest.fixture(scope="module")
def trained(job):
    return train_lora(job)


def test_loss_falls_and_the_card_says_what_was_trained(trained, job):
    quarter = len(trained.losses) // 4
    assert len(trained.losses) == 40
    assert sum(trained.losses[-quarter:]) / quarter < sum(trained.losses[:quarter]) / quarter
    card = json.loads((job.out / CARD_FILE).read_text())
    assert card["weights"] == "dev-random" and card["steps"] == 40 and card["rank"] == 4
    assert card["dataset"]["photos"] == 12 and len(card["dataset"]["sha256"]) == 64
    assert card["final_loss"] == pytest.approx(sum(trained.losses[-4:]) / 4, abs=1e-4)
    assert sorted(p.name for p in (job.out / "validation").iterdir()) == ["test-1.png", "test-2.png"]


def test_kohya_layout_holds_the_same_adapter(trained, job):
    kohya = load_file(str(job.out / "stripes.kohya.safetensors"))
    diffusers = load_file(str(job.out / LORA_FILE))
    assert kohya and all(key.startswith("lora_unet_") for key in kohya)
    downs = [k for k in kohya if k.endswith(".lora_down.weight")]
    assert len(downs) == len([k for k in kohya if k.endswith(".alpha")]) == len(diffusers) // 2
    assert all(kohya[k.replace(".lora_down.weight", ".alpha")].item() == 4 for k in downs)


def test_both_layouts_load_in_the_generator_and_change_the_image(trained, job, tiny_dir):
    from diffusers import StableDiffusionXLPipeline

    def render(lora=None):
        pipe = StableDiffusionXLPipeline.from_pretrained(tiny_dir)
        pipe.set_progress_bar_config(disable=True)
        if lora is not None:
            pipe.load_lora_weights(str(lora))
        return pipe("stripes desk", num_inference_steps=2, width=64, height=64, output_type="pt",
                    generator=torch.Generator().manual_seed(1)).images

    base = render()
    with_diffusers, with_kohya = render(job.out / LORA_FILE), render(job.out / "stripes.kohya.safetensors")
    assert torch.allclose(with_diffusers, with_kohya, atol=1e-5)
    assert (with_diffusers - base).abs().max() > 1e-3


def test_resume_continues_the_run_exactly(trained, job, tmp_path):
    resumed = replace(job, out=tmp_path, resume=True, validation_steps=0)
    shutil.copytree(job.out / "checkpoints" / "step-20", tmp_path / "checkpoints" / "step-20")
    report = train_lora(resumed)
    assert report.losses == pytest.approx(trained.losses[20:], rel=1e-5)
    first, again = load_file(str(job.out / LORA_FILE)), load_file(str(tmp_path / LORA_FILE))
    assert all(torch.allclose(first[k], again[k], atol=1e-6) for k in first)


def test_corrupt_photos_are_named_and_left_out(job, tmp_path):
    draw_styles(tmp_path / "data", count=4)
    (tmp_path / "data" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    report = train_lora(replace(job, data=str(tmp_path / "data"), out=tmp_path / "out", steps=2,
                                checkpoint_every=0, validation_steps=0))
    assert list(report.skipped) == ["broken.jpg"] and "image_" in report.skipped["broken.jpg"]
    assert report.card["dataset"] == {**report.card["dataset"], "photos": 4, "skipped": 1}


@pytest.mark.parametrize("content", [{}, {"broken.png": b"\x89PNG\r\n\x1a\n broken"}])
def test_a_dataset_with_nothing_usable_stops_with_one_line(job, tmp_path, content):
    for name, data in content.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(FatalError, match="no photos|none decodable"):
        train_lora(replace(job, data=str(tmp_path), out=tmp_path / "out"))

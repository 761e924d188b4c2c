"""Generator benchmark: per-preset latency, peak VRAM, preset-switch cost, keep_devices and fast.

    python tests/bench/bench_generator.py [--quick] [--compile]
    python tests/bench/bench_generator.py --cpu-full-proof

With CUDA: the full SDXL architecture (dev weights, built under .cache/dev-models/generator-full
if missing, or DESKGEN_GENERATOR_MODEL with its LoRAs), 1024², 30 steps: plain diffusers fp16 with
one preset (the baseline) against the service path, per-preset latency and peak VRAM, preset
switch time with set_adapters against the fast switch, keep_devices (inpainting from the shared
components) and fast at 4 steps in both modes — all in one run.
Without CUDA: tiny dev weights on the CPU (latencies say nothing about SDXL speed), and the switch
cost on the full SDXL module tree built on the meta device (no weights, the same Python work).
``--cpu-full-proof``: the full SDXL architecture (dev weights) on the CPU at 1024², 2 steps, both
modes, with peak RSS — proof that the full-size paths load and run (≈ 20 GiB RAM, ≈ 15 min on 2 cores;
building the weights first, if missing: ≈ 14 GiB, ≈ 7 min).
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "stack")]

import torch  # noqa: E402

from deskgen.common.models import dev_models_dir  # noqa: E402
from deskgen.services.generator.devweights import _SIZES, FAST_LORA, SAM_DIR, build_dev  # noqa: E402
from deskgen.services.generator.locate import CamDetector  # noqa: E402
from deskgen.services.generator.masks import DeviceMasker  # noqa: E402
from deskgen.services.generator.components import Placement, RuntimeOptions, lora_file  # noqa: E402
from deskgen.services.generator.model import AdapterSwitch, FastLora, GenerationOptions, GeneratorModel  # noqa: E402
from deskgen.services.generator.presets import evaluation_prompts, load_presets  # noqa: E402
from samples import draw_desk  # noqa: E402

SWITCH_ORDER = ["ott_3d", "dalle_only", "mix", "3d_only", "dalle_ott", "dalle_3d", "ott_only"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--compile", action="store_true", help="(cuda) torch.compile the UNet in the service path")
    parser.add_argument("--cpu-full-proof", action="store_true",
                        help="full SDXL architecture on the CPU, 1024², 2 steps, both modes, peak RSS")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.cpu_full_proof
    device = torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores, {platform.processor() or '?'})"
    print(f"# bench_generator — {datetime.datetime.now().isoformat(timespec='minutes')} — "
          f"{platform.node()}, {device}, torch {torch.__version__}\n")
    if args.cpu_full_proof:
        rows = _cpu_full_proof_rows()
    else:
        rows = _cuda_rows(args) if cuda else _cpu_rows(args)
    print("| measurement | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


def _switch_ms(model: GeneratorModel, repeats: int) -> float:
    presets = model.presets.presets
    timings = []
    for _ in range(repeats):
        for name in SWITCH_ORDER:
            timings.append(model.activate(presets[name]))
    return statistics.median(timings)


def _latency_rows(model: GeneratorModel, options: GenerationOptions, label: str, cuda: bool) -> list:
    prompt, negative = evaluation_prompts()[0][0], evaluation_prompts()[1]
    presets = model.presets
    model.generate(prompt, negative, presets.presets["ott_3d"], options)  # warm-up
    rows = []
    for name in presets.names("seed"):
        result = model.generate(prompt, negative, presets.presets[name], options)
        vram = f", peak VRAM {result.peak_gpu_mem_bytes / 1e9:.2f} GB" if cuda else ""
        rows.append((f"{label}: {name}", f"{result.inference_ms / 1000:.3f} s{vram}"))
    return rows


def _mode_rows(model: GeneratorModel, masker: DeviceMasker, options: GenerationOptions, label: str,
               fast_steps: int, fast_scheduler: str, cuda: bool) -> list:
    """keep_devices at ``options``; fast at ``fast_steps`` in both modes (preset ott_3d, the drawn desk)."""
    prompt, negative = evaluation_prompts()[0][0], evaluation_prompts()[1]
    preset = model.presets.presets["ott_3d"]
    photo, keep = _desk_and_mask(masker, (options.width, options.height))
    fast = replace(options, steps=fast_steps, guidance=0.0, scheduler=fast_scheduler, fast=True)
    runs = [(f"{label}, keep_devices, {options.steps} steps, strength {options.strength}", options, True),
            (f"{label}, fast restyle, {fast_steps} steps", fast, False),
            (f"{label}, fast keep_devices, {fast_steps} steps", fast, True)]
    rows = []
    for name, run_options, keep_devices in runs:
        for _ in range(2):  # the first run warms up
            if keep_devices:
                result = model.inpaint(prompt, negative, preset, run_options, photo, keep, feather_px=6)
            else:
                result = model.generate(prompt, negative, preset, run_options)
        vram = f", peak VRAM {result.peak_gpu_mem_bytes / 1e9:.2f} GB" if cuda else ""
        rows.append((name, f"{result.inference_ms / 1000:.3f} s{vram}"))
    return rows


def _desk_and_mask(masker: DeviceMasker, size: tuple[int, int]):
    """A drawn desk photo resized to ``size`` and the keep mask of the devices the offline detector finds on it."""
    from PIL import Image

    from deskgen.services.generator.settings import GeneratorSettings

    detector = CamDetector(placement=masker.placement)
    detector.load()
    photo = draw_desk(seed=0, size=(320, 240))
    found = detector.detect(photo, GeneratorSettings().keep_categories)
    photo = photo.resize(size, Image.Resampling.LANCZOS)
    return photo, masker.mask(photo, [hit.box for hits in found.values() for hit in hits])


def _cpu_full_proof_rows() -> list:
    """Full-size dev weights on the CPU: load, then one 1024² image per mode at 2 steps; the peak RSS of
    each phase (the kernel's high-water mark, reset between phases, so building missing weights is not counted)."""
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    base = dev_models_dir() / "generator-full"
    if not (base / SAM_DIR / "config.json").is_file():
        build_dev(base, size="full")
    reset_peak_rss()
    started = time.perf_counter()
    cpu = Placement.pick("cpu")
    model = GeneratorModel(str(base), {name: str(base / "loras" / name) for name in load_presets().adapters},
                           placement=cpu, fast=FastLora(str(base / FAST_LORA)))
    model.load()
    masker = DeviceMasker(str(base / SAM_DIR), grow=0.02, placement=cpu)
    masker.load()
    rows = [(f"full SDXL ({model.card.weights} weights, {str(cpu.dtype).removeprefix('torch.')}) on CPU: load",
             f"{time.perf_counter() - started:.1f} s, peak RSS {peak_rss_gib():.2f} GiB")]
    options = GenerationOptions(steps=2, guidance=5.0, width=1024, height=1024, scheduler="default", seed=1,
                                strength=1.0)
    prompt, negative = evaluation_prompts()[0][0], evaluation_prompts()[1]
    preset = model.presets.presets["ott_3d"]
    reset_peak_rss()
    result = model.generate(prompt, negative, preset, options)
    rows.append(("restyle, 1024², 2 steps", f"{result.inference_ms / 1000:.1f} s/image, output "
                 f"{'×'.join(map(str, result.image.size))}, peak RSS {peak_rss_gib():.2f} GiB"))
    reset_peak_rss()
    photo, keep = _desk_and_mask(masker, (1024, 1024))
    kept = 1 - keep.histogram()[0] / (1024 * 1024)
    result = model.inpaint(prompt, negative, preset, options, photo, keep, feather_px=6)
    rows.append((f"keep_devices (SAM vit-base arch mask, {kept:.0%} kept), 1024², 2 steps",
                 f"{result.inference_ms / 1000:.1f} s/image, output {'×'.join(map(str, result.image.size))}, "
                 f"peak RSS {peak_rss_gib():.2f} GiB (mask included)"))
    return rows


def reset_peak_rss() -> None:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux ≥ 4.0)."""
    pathlib.Path("/proc/self/clear_refs").write_text("5")


def peak_rss_gib() -> float:
    """This process's peak RSS since the last reset (GiB)."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status")


def _cpu_rows(args) -> list:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = build_dev(pathlib.Path(tmp) / "generator-tiny", size="tiny")
        loras = {name: str(base / "loras" / name) for name in load_presets().adapters}
        options = GenerationOptions(steps=2 if args.quick else 4, guidance=5.0, width=64, height=64,
                                    scheduler="default", seed=1, strength=0.9)
        repeats = 3 if args.quick else 20
        for fast in (False, True):
            model = GeneratorModel(str(base), loras, placement=Placement.pick("cpu"),
                                   options=RuntimeOptions(fast_switch=fast), fast=FastLora(str(base / FAST_LORA)))
            model.load()
            label = "fast switch" if fast else "set_adapters"
            rows.append((f"tiny/CPU preset switch, {label} (median ms)", f"{_switch_ms(model, repeats):.3f}"))
            if fast:
                label = f"tiny/CPU 64², {options.steps} steps latency"
                rows += _latency_rows(model, options, label, cuda=False)
                masker = DeviceMasker(str(base / SAM_DIR), grow=0.02, placement=model.placement)
                masker.load()
                rows += _mode_rows(model, masker, options, "tiny/CPU 64²", fast_steps=2, fast_scheduler="lcm",
                                   cuda=False)
    rows += _meta_switch_rows(repeats)
    return rows


def _meta_switch_rows(repeats: int) -> list:
    """Switch cost on the full SDXL module tree (meta tensors: the Python work without the weights)."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    spec = _SIZES["full"]
    with torch.device("meta"), warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        unet = UNet2DConditionModel(in_channels=4, out_channels=4, use_linear_projection=True,
                                    addition_embed_type="text_time", **spec["unet"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**spec["text_encoder"]))
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**spec["text_encoder_2"]))
        for name in load_presets().adapters:
            unet.add_adapter(LoraConfig(r=32, lora_alpha=32, target_modules=["to_q", "to_k", "to_v", "to_out.0"]),
                             adapter_name=name)
            for model in (text_encoder, text_encoder_2):
                model.add_adapter(LoraConfig(r=32, lora_alpha=32,
                                             target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]),
                                  adapter_name=name)
    pipe = StableDiffusionXLPipeline(vae=None, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=None, tokenizer_2=None, unet=unet, scheduler=None)
    switch = AdapterSwitch((unet, text_encoder, text_encoder_2))
    mixes = [load_presets().presets[name].mix for name in SWITCH_ORDER]
    slow, fast = [], []
    for _ in range(repeats):
        for mix in mixes:
            started = time.perf_counter()
            pipe.set_adapters([n for n, _ in mix], [w for _, w in mix])
            slow.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            switch.apply(mix)
            fast.append((time.perf_counter() - started) * 1000)
    label = f"full SDXL tree on meta ({len(switch)} LoRA layers), preset switch"
    return [(f"{label}, set_adapters (median ms)", f"{statistics.median(slow):.2f}"),
            (f"{label}, fast switch (median ms)", f"{statistics.median(fast):.2f}")]


def _cuda_rows(args) -> list:
    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import load_file

    base_uri = os.environ.get("DESKGEN_GENERATOR_MODEL")
    if base_uri:
        from deskgen.services.generator.settings import GeneratorSettings

        settings = GeneratorSettings()
        lora_uris, fast_uri, sam_uri = settings.lora_uris(), settings.fast_lora, settings.sam
        fast_scheduler = settings.fast_scheduler
    else:
        base = dev_models_dir() / "generator-full"
        if not (base / SAM_DIR / "config.json").is_file():
            build_dev(base, size="full")
        base_uri, fast_uri, sam_uri, fast_scheduler = str(base), str(base / FAST_LORA), str(base / SAM_DIR), "lcm"
        lora_uris = {name: str(base / "loras" / name) for name in load_presets().adapters}
    steps = 10 if args.quick else 30
    options = GenerationOptions(steps=steps, guidance=5.0, width=1024, height=1024, scheduler="default", seed=1,
                                strength=0.9)
    prompt, negative = evaluation_prompts()[0][0], evaluation_prompts()[1]
    rows = []

    # Baseline: plain diffusers, fp16, one preset (ott_3d) set once.
    from deskgen.common.models import ModelSources, resolve

    sources = ModelSources.load()
    pipe = StableDiffusionXLPipeline.from_pretrained(resolve(base_uri, sources), dtype=torch.float16).to("cuda")
    pipe.set_progress_bar_config(disable=True)
    for name, uri in lora_uris.items():
        pipe.load_lora_weights(load_file(str(lora_file(resolve(uri, sources)))), adapter_name=name)
    pipe.set_adapters(["ott", "3d"], [0.7, 0.5])
    timings = []
    for _ in range(2):
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        pipe(prompt, negative_prompt=negative, num_inference_steps=steps, width=1024, height=1024,
             generator=torch.Generator("cpu").manual_seed(1))
        timings.append(time.perf_counter() - started)
    rows.append((f"baseline diffusers fp16, ott_3d, 1024², {steps} steps",
                 f"{timings[-1]:.2f} s, peak VRAM {torch.cuda.max_memory_allocated() / 1e9:.2f} GB"))
    del pipe
    torch.cuda.empty_cache()

    for fast in (False, True):
        model = GeneratorModel(base_uri, lora_uris, placement=Placement.pick("cuda"), options=RuntimeOptions(
            fast_switch=fast, compile=args.compile and fast), fast=FastLora(fast_uri), sources=sources)
        model.load()
        label = "fast switch" if fast else "set_adapters"
        rows.append((f"preset switch, {label} (median ms)", f"{_switch_ms(model, 3 if args.quick else 10):.2f}"))
        if fast:
            label = f"service path 1024², {steps} steps" + (", compiled" if args.compile else "")
            rows += _latency_rows(model, options, label, cuda=True)
            masker = DeviceMasker(sam_uri, grow=0.02, placement=model.placement, sources=sources)
            masker.load()
            rows += _mode_rows(model, masker, options, "service path 1024²", fast_steps=4,
                              fast_scheduler=fast_scheduler, cuda=True)
        del model
        torch.cuda.empty_cache()
    return rows


if __name__ == "__main__":
    sys.exit(main())

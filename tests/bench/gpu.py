"""GPU benchmarks in one command (``make bench-gpu``): each prints one table, the service path and plain
diffusers side by side in the same run.

    python tests/bench/gpu.py [generator ...] [--repeats 10] [--compile]
    python tests/bench/gpu.py generator --device cpu --size tiny --repeats 2     # smoke test, no GPU

``generator``: restyle at 1024², 30 steps; fast at 1024², 4 steps (the fast LoRA and its scheduler);
keep_devices (locator + SAM + inpainting UNet) on a real desk photo cropped to 4:3, which takes the 1152×896
bucket, 30 steps. p50/p95 of the whole job (``stage.handle``: decode, locate, mask, generate, encode) and of
its inference, peak GPU memory; beside them plain diffusers fp16 doing the same generation (its inpainting
gets the service's mask: no locator, no SAM). Weights: the full-size dev weights (built under
.cache/dev-models on first use, no hub needed), or the real ones when DESKGEN_GENERATOR_MODEL and the other
DESKGEN_GENERATOR_* settings name them. More GPU benchmarks join as entries of BENCHES (one function each,
returning the table's rows); ``make bench-gpu`` runs them all.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import pathlib
import platform
import sys
import tempfile
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rehearse_generator import captioned, desk_photo_4x3, keep_middle_if_dev_random, photo_blobs  # noqa: E402
from deskgen.common.models import ModelSources, dev_models_dir, resolve  # noqa: E402
from deskgen.services.generator.components import lora_file  # noqa: E402
from deskgen.services.generator.devweights import (FAST_LORA, INPAINT_UNET_DIR, SAM_DIR, build_dev,  # noqa: E402
                                                   build_dev_locator)
from deskgen.services.generator.presets import load_presets  # noqa: E402
from deskgen.services.generator.schedulers import build_scheduler  # noqa: E402
from deskgen.services.generator.settings import GeneratorSettings  # noqa: E402
from deskgen.services.generator.stage import build_stage  # noqa: E402

Row = tuple[str, ...]
HEADER = ("case", "service p50", "service p95", "inference p50", "diffusers p50", "diffusers p95", "speed-up (p50)",
          "peak GPU mem service / diffusers")
PRESET = "ott_3d"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benches", nargs="*", metavar="bench", help=f"any of {', '.join(BENCHES)} (default: all)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--size", default="full", choices=["full", "tiny"],
                        help="dev weights' size (tiny: the smoke test's, at 64² resolution)")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per case, after one warm-up")
    parser.add_argument("--compile", action="store_true", help="torch.compile the service's UNet")
    args = parser.parse_args()
    unknown = sorted(set(args.benches) - set(BENCHES))
    if unknown:
        parser.error(f"unknown bench {', '.join(unknown)}: choose from {', '.join(BENCHES)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench-gpu: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine, or "
              "smoke-test it with --device cpu --size tiny", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    for bench in args.benches or list(BENCHES):
        print(f"# bench-gpu {bench} — {datetime.datetime.now().isoformat(timespec='minutes')} — {platform.node()}, "
              f"{name}, torch {torch.__version__}, {args.size} weights, {args.repeats} runs per case\n")
        rows = BENCHES[bench](args)
        print("| " + " | ".join(HEADER) + " |\n|" + "---|" * len(HEADER))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        print()
    return 0


def generator_rows(args) -> list[Row]:
    cuda = args.device == "cuda"
    settings = _generator_settings(args)
    resolution = settings.bucket_resolution
    photo = desk_photo_4x3()
    cases = {  # case → its request (the keep_devices one names no size: the photo's bucket)
        f"restyle {resolution}², {settings.steps} steps": {"width": resolution, "height": resolution,
                                                          "preset": PRESET},
        f"fast {resolution}², {settings.fast_steps} steps": {"width": resolution, "height": resolution,
                                                            "preset": PRESET, "fast": True},
        f"keep_devices 4:3 photo, {settings.steps} steps": {"mode": "keep_devices", "preset": PRESET},
    }
    stage = build_stage(settings)
    stage.load()
    detector = stage.components.detector
    keep_middle_if_dev_random(detector)
    service: dict[str, tuple[list[float], list[float], int]] = {}
    outputs: dict[str, dict] = {}
    masks = {}
    for case, request in cases.items():
        job, blobs = captioned(request), photo_blobs(photo)
        runs, peak = _timed(functools.partial(stage.handle, job, blobs), args.repeats, cuda)
        service[case] = ([s for s, _ in runs], [o.section["timings"]["inference_ms"] / 1000 for _, o in runs], peak)
        outcome = runs[-1][1]
        outputs[case] = outcome.section
        if len(outcome.blobs) > 1:
            masks[case] = outcome.blobs[1].data
    del stage, detector
    _free(cuda)
    baseline = _diffusers_rows(settings, cases, outputs, masks, photo, args, cuda)
    rows = []
    for case, (walls, inference, peak) in service.items():
        output = outputs[case]
        label = f"{case} → {output['width']}×{output['height']}, {output['mode']}" + (
            f" ({len(output.get('kept_devices', []))} devices)" if output["mode"] == "keep_devices" else "")
        base_walls, base_peak = baseline.get(case, ([], 0))
        speedup = f"{_p(base_walls, 50) / _p(walls, 50):.2f}×" if base_walls else "–"
        rows.append((label, _s(_p(walls, 50)), _s(_p(walls, 95)), _s(_p(inference, 50)),
                     _s(_p(base_walls, 50)) if base_walls else "–", _s(_p(base_walls, 95)) if base_walls else "–",
                     speedup, f"{_gb(peak, cuda)} / {_gb(base_peak, cuda)}"))
    rows.append((f"weights {outputs[next(iter(outputs))]['weights']}, {settings.dtype}, locator "
                 f"{outputs[next(iter(outputs))]['locator']}",) + ("",) * (len(HEADER) - 1))
    return rows


def _generator_settings(args) -> GeneratorSettings:
    """The service's settings: DESKGEN_GENERATOR_* when they name a model, else the dev weights of ``--size``."""
    device_dtype = {"device": args.device, "dtype": "float16" if args.device == "cuda" else "float32",
                    "warmup": False, "compile": args.compile}
    if os.environ.get("DESKGEN_GENERATOR_MODEL"):
        return GeneratorSettings(**device_dtype)
    if args.size == "tiny":
        folder = pathlib.Path(tempfile.mkdtemp(prefix="bench-gpu-"))
        base, owl = build_dev(folder / "generator", size="tiny"), build_dev_locator(folder / "owlv2", size="tiny")
        sizes = {"resolution": 64, "width": 64, "height": 64, "min_side": 32}
    else:
        base, owl = dev_models_dir() / "generator-full", dev_models_dir() / "owlv2-full"
        if not (base / INPAINT_UNET_DIR / "config.json").is_file():
            build_dev(base, size="full")
        if not (owl / "config.json").is_file():
            build_dev_locator(owl, size="full")
        sizes = {"resolution": 1024}
    return GeneratorSettings(
        model=str(base), **{f"lora_{name}": str(base / "loras" / name) for name in load_presets().adapters},
        fast_lora=str(base / FAST_LORA), fast_scheduler="lcm", inpaint_unet=str(base / INPAINT_UNET_DIR),
        sam=str(base / SAM_DIR), locator="owlv2", locator_model=str(owl), steps=30, fast_steps=4,
        **sizes, **device_dtype)


def _diffusers_rows(settings: GeneratorSettings, cases: dict, outputs: dict, masks: dict, photo, args,
                    cuda: bool) -> dict[str, tuple[list[float], int]]:
    """Plain diffusers doing each case's generation (same size, steps, guidance, seed, adapters)."""
    import io

    from diffusers import StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
    from PIL import Image
    from safetensors.torch import load_file

    from deskgen.services.generator.geometry import fit

    sources = ModelSources.load()
    dtype = torch.float16 if cuda else torch.float32
    pipe = StableDiffusionXLPipeline.from_pretrained(resolve(settings.model, sources), torch_dtype=dtype)
    pipe = pipe.to(args.device)
    pipe.set_progress_bar_config(disable=True)
    uris = {**settings.lora_uris(), "fast": settings.fast_lora}
    for name, uri in uris.items():
        pipe.load_lora_weights(load_file(str(lora_file(resolve(uri, sources)))), adapter_name=name)
    mix = load_presets().presets[PRESET].mix
    inpaint_unet = UNet2DConditionModel.from_pretrained(resolve(settings.inpaint_unet, sources), torch_dtype=dtype)
    inpaint = StableDiffusionXLInpaintPipeline.from_pipe(pipe, unet=inpaint_unet.to(args.device))
    default_scheduler = pipe.scheduler
    results = {}
    for case in cases:
        output = outputs[case]
        kwargs = dict(prompt="a tidy modern desk setup, soft daylight", negative_prompt="blurry",
                      num_inference_steps=output["steps"], guidance_scale=output["guidance"], width=output["width"],
                      height=output["height"])
        names, weights = [n for n, _ in mix], [w for _, w in mix]
        if output["fast"]:
            pipe.set_adapters([*names, "fast"], [*weights, settings.fast_weight])
            pipe.scheduler = build_scheduler(settings.fast_scheduler, default_scheduler.config)
        else:
            pipe.set_adapters(names, weights)
            pipe.scheduler = default_scheduler
        target = pipe
        if case in masks:
            image, _ = fit(photo, (output["width"], output["height"]))
            mask = Image.fromarray(255 - np.asarray(Image.open(io.BytesIO(masks[case])).convert("L")))  # paint = 255
            kwargs.update(image=image, mask_image=mask, strength=output["strength"])
            inpaint.scheduler, target = pipe.scheduler, inpaint

        def generate(target=target, kwargs=kwargs, seed=output["seed"]):
            return target(**kwargs, generator=torch.Generator("cpu").manual_seed(seed))

        runs, peak = _timed(generate, args.repeats, cuda)
        results[case] = ([s for s, _ in runs], peak)
    del pipe, inpaint
    _free(cuda)
    return results


def _timed(call: Callable, repeats: int, cuda: bool) -> tuple[list[tuple[float, object]], int]:
    """One warm-up, then ``repeats`` timed calls: [(seconds, result)] and the peak GPU memory (bytes) of the
    timed calls (0 on the CPU)."""
    call()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = call()
        if cuda:
            torch.cuda.synchronize()
        runs.append((time.perf_counter() - started, result))
    return runs, torch.cuda.max_memory_allocated() if cuda else 0


def _free(cuda: bool) -> None:
    import gc

    gc.collect()
    if cuda:
        torch.cuda.empty_cache()


def _p(values: list[float], q: int) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _s(seconds: float) -> str:
    return f"{seconds:.3f} s"


def _gb(peak: int, cuda: bool) -> str:
    return f"{peak / 1e9:.2f} GB" if cuda else "–"


BENCHES: dict[str, Callable[[argparse.Namespace], list[Row]]] = {"generator": generator_rows}

if __name__ == "__main__":
    sys.exit(main())

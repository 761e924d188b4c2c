"""Production rehearsal on the CPU: every generator component at full architecture size, one keep_devices job.

    python tests/bench/rehearse_generator.py [--dtype bfloat16] [--steps 2] [--photo FILE]

SDXL base, its LoRAs and fast LoRA, the 9-channel inpainting UNet, SAM ViT-B and OWLv2 base (dev-random
weights, built under .cache/dev-models/{generator-full,owlv2-full} if missing) are loaded together through the
service's own ``build_stage`` and ``load``; then one keep_devices job runs on a real desk photo cropped to 4:3,
with no size asked for, so it takes the 4:3 bucket (1152×896). Printed: load time, each component's time
(from the result's ``timings``) and the peak RSS of every phase (the kernel's high-water mark, reset between
phases). bfloat16 by default: SDXL with an inpainting UNet and the rest is ≈ 25 GB in float32, more than a
24 GB machine; float32 fits a larger one. The timings say nothing about GPU speed; the run proves that
everything loads together and runs the real path at the real sizes (≈ 16 GiB RAM; ≈ 15–25 min on 2 cores).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import io
import os
import pathlib
import platform
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from bench_generator import peak_rss_gib, reset_peak_rss  # noqa: E402
from deskgen.common.events import Event  # noqa: E402
from deskgen.common.models import dev_models_dir  # noqa: E402
from deskgen.services.generator.locate import Detection  # noqa: E402
from deskgen.services.generator.devweights import (FAST_LORA, INPAINT_UNET_DIR, SAM_DIR, build_dev,  # noqa: E402
                                                   build_dev_locator)
from deskgen.services.generator.settings import GeneratorSettings  # noqa: E402
from deskgen.services.generator.stage import build_stage  # noqa: E402
from support.blobs import MemoryBlobs  # noqa: E402

PHOTO = ROOT / "tests" / "data" / "desk-photos" / "laptop-white-desk-plant.jpg"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                        help="the generator's dtype setting (DESKGEN_GENERATOR_DTYPE) for every component")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--photo", type=pathlib.Path, default=PHOTO, help="a desk photo (cropped to 4:3, centred)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# rehearse_generator — {datetime.datetime.now().isoformat(timespec='minutes')} — {platform.node()}, "
          f"CPU ({os.cpu_count()} cores, {args.threads} threads), torch {torch.__version__}, {args.dtype}\n")

    base, owl = dev_models_dir() / "generator-full", dev_models_dir() / "owlv2-full"
    if not (base / INPAINT_UNET_DIR / "config.json").is_file():
        build_dev(base, size="full")
    if not (owl / "config.json").is_file():
        build_dev_locator(owl, size="full")
    settings = GeneratorSettings(
        model=str(base), **{f"lora_{name}": str(base / "loras" / name) for name in ("dalle", "ott", "3d")},
        fast_lora=str(base / FAST_LORA), inpaint_unet=str(base / INPAINT_UNET_DIR), sam=str(base / SAM_DIR),
        locator="owlv2", locator_model=str(owl), device="cpu", dtype=args.dtype, warmup=False)
    rows: list[tuple[str, str]] = []

    reset_peak_rss()
    started = time.perf_counter()
    stage = build_stage(settings)
    stage.load()
    rows.append(("load: SDXL + 4 LoRAs + inpainting UNet + SAM + OWLv2",
                 f"{time.perf_counter() - started:.1f} s, peak RSS {peak_rss_gib():.2f} GiB"))
    components = stage.components
    detector = components.detector
    keep_middle_if_dev_random(detector)
    phases: dict[str, float] = {}
    for name, owner, method in (("locator", detector, "detect"), ("sam", components.masker, "mask"),
                                ("sdxl inpaint", components.model, "inpaint")):
        setattr(owner, method, _rss_of(phases, name, getattr(owner, method)))

    photo = desk_photo_4x3(args.photo)
    reset_peak_rss()
    started = time.perf_counter()
    outcome = stage.handle(captioned({"mode": "keep_devices", "steps": args.steps}), photo_blobs(photo))
    total = time.perf_counter() - started
    job_peak = peak_rss_gib()
    output = outcome.section
    timings = output["timings"]
    size = f"{output['width']}×{output['height']}"
    kept = f"{len(output.get('kept_devices', []))} devices kept" if output["mode"] == "keep_devices" else \
        f"fell back to {output['mode']} ({output.get('fallback')})"
    rows.append((f"job: keep_devices, {photo.size[0]}×{photo.size[1]} photo (4:3) → {size}, {args.steps} steps",
                 f"{total:.1f} s, {kept}, peak RSS {job_peak:.2f} GiB"))
    for label, key, phase in (("decode the photo", "photo_ms", None), ("locator (OWLv2 base)", "detect_ms", "locator"),
                              ("keep mask (SAM ViT-B)", "mask_ms", "sam"),
                              ("inpaint: denoise (inpainting UNet)", "denoise_ms", "sdxl inpaint"),
                              ("inpaint: VAE decode", "decode_ms", None), ("encode the PNG", "encode_ms", None)):
        if key in timings:
            rss = f", peak RSS {phases[phase]:.2f} GiB" if phase in phases else ""
            rows.append((f"  {label}", f"{timings[key] / 1000:.1f} s{rss}"))
    print("| phase | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(f"\nweights: {output['weights']}; locator {output['locator']}")
    return 0


def _rss_of(phases: dict[str, float], name: str, call):
    """``call`` wrapped so that the peak RSS while it runs lands in ``phases[name]``."""
    @functools.wraps(call)
    def measured(*args, **kwargs):
        reset_peak_rss()
        try:
            return call(*args, **kwargs)
        finally:
            phases[name] = peak_rss_gib()
    return measured


def keep_middle_if_dev_random(detector) -> None:
    """A dev-random locator still runs (its time counts) but its random boxes are mostly empty: it then reports
    the photo's middle as a laptop, so that SAM and the inpainting run as they would on a found device."""
    if detector is None or "dev-random" not in detector.name:
        return
    detect = detector.detect

    def detect_then_middle(image, wanted):
        detect(image, wanted)
        return {category: [Detection(category, (0.3, 0.3, 0.7, 0.7), (0.5, 0.5), 1.0)] if category == "laptop"
                else [] for category in wanted}

    detector.detect = detect_then_middle


def desk_photo_4x3(path: pathlib.Path = PHOTO) -> Image.Image:
    """A real desk photo cropped to 4:3, centred."""
    photo = Image.open(path).convert("RGB")
    width, height = photo.size
    side = min(width / 4, height / 3)
    return photo.crop((round((width - 4 * side) / 2), round((height - 3 * side) / 2),
                       round((width + 4 * side) / 2), round((height + 3 * side) / 2)))


def photo_blobs(photo: Image.Image) -> MemoryBlobs:
    """Blobs holding ``photo`` (PNG) as the bench job's upload."""
    buffer = io.BytesIO()
    photo.save(buffer, "PNG")
    return MemoryBlobs({"uploads/bench/original.png": buffer.getvalue()})


def captioned(request: dict) -> Event:
    """The captioned event of the bench job, whose photo is ``photo_blobs``'."""
    data = {"job_id": "bench", "image_key": "uploads/bench/original.png",
            "uploaded_at": "2026-12-07T00:00:00Z", "request": request, "timeline": {},
            "captioning": {"prompt": "a tidy modern desk setup, soft daylight", "negative_prompt": "blurry",
                           "preset": "basic", "concept": "BASIC"}}
    return Event(kind="captioned", id="bench-c", source="bench", time="2026-12-07T00:00:01Z", data=data)


if __name__ == "__main__":
    sys.exit(main())

"""Generator memory soak: many jobs through the real stage on the tiny model; memory must stay flat.

    python tests/bench/soak_generator.py [--jobs 300] [--every 50] [--warmup 50]

Jobs cycle through every preset, both modes, fast on and off, and four sizes, through
``GeneratorStage.handle`` (the service's own path: device detection with the offline CAM detector,
SAM masks, inpainting from the shared components, paste-back, PNG encoding) on drawn desk photos. Every ``--every`` jobs it prints the process RSS (and
CUDA memory where present); at the end, the growth from the first reading after ``--warmup`` jobs to
the last. The goal is ≤ 5 %: the original service's GPU memory grew until it reloaded the pipeline
every three jobs. ``tests/unit/generator/test_generator_soak.py`` runs a short version in CI.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import io
import itertools
import os
import pathlib
import platform
import sys
import tempfile
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "stack"), str(ROOT / "tests")]

import torch  # noqa: E402

from deskgen.common.events import Event  # noqa: E402
from deskgen.common.request import MODES  # noqa: E402
from deskgen.services.generator.devweights import FAST_LORA, SAM_DIR, build_dev  # noqa: E402
from deskgen.services.generator.settings import GeneratorSettings  # noqa: E402
from deskgen.services.generator.stage import build_stage  # noqa: E402
from samples import draw_desk  # noqa: E402
from support.blobs import MemoryBlobs  # noqa: E402

__all__ = ["soak", "growth", "rss_bytes"]

SIZES = [(64, 64), (96, 64), (64, 96), (128, 128)]


def rss_bytes() -> int:
    """The process's resident set size now (not its peak)."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def soak(model_dir: pathlib.Path, jobs: int, every: int, report: Callable[[int, int, int | None], None],
         sizes: list[tuple[int, int]] = SIZES) -> list[int]:
    """Run ``jobs`` mixed jobs; call ``report(done, rss, cuda_bytes)`` every ``every`` jobs; return the RSS readings.
    Every ``4 * len(sizes)`` jobs cover each size × mode × fast combination once."""
    settings = GeneratorSettings(model=str(model_dir), **{f"lora_{n}": str(model_dir / "loras" / n)
                                                          for n in ("dalle", "ott", "3d")},
                                 fast_lora=str(model_dir / FAST_LORA), fast_steps=2, sam=str(model_dir / SAM_DIR),
                                 steps=2, width=64, height=64, min_side=32, warmup=False, locator="cam")
    stage = build_stage(settings)
    stage.load()
    photos = []
    for seed in range(4):
        buffer = io.BytesIO()
        draw_desk(seed=seed, size=(320, 240)).save(buffer, "PNG")
        photos.append(buffer.getvalue())
    presets = stage.model.presets.names()
    combos = itertools.cycle(itertools.product(MODES, (False, True)))
    cuda = torch.cuda.is_available()
    readings = []
    for done in range(1, jobs + 1):
        mode, fast = next(combos)
        width, height = sizes[(done // 4) % len(sizes)]  # every size meets every mode × fast pair
        job = f"soak-{done}"
        request = {"mode": mode, "fast": fast, "preset": presets[done % len(presets)], "width": width,
                   "height": height}
        event = Event(kind="captioned", id=job, source="soak", time="2026-12-01T00:00:00Z", data={
            "job_id": job, "image_key": f"uploads/{job}/original.png", "uploaded_at": "2026-12-01T00:00:00Z",
            "request": request, "timeline": {},
            "captioning": {"prompt": "a tidy desk with a monitor", "negative_prompt": "blurry", "preset": "basic",
                           "concept": "BASIC"}})
        stage.handle(event, MemoryBlobs({event.data["image_key"]: photos[done % len(photos)]}))
        if done % every == 0:
            gc.collect()
            readings.append(rss_bytes())
            report(done, readings[-1], torch.cuda.memory_allocated() if cuda else None)
    return readings


def growth(readings: list[int], warmup_readings: int) -> float:
    """Relative RSS growth from the first reading after warm-up to the last."""
    start = readings[warmup_readings - 1] if warmup_readings else readings[0]
    return readings[-1] / start - 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=50, help="jobs before the baseline reading")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"# soak_generator — {datetime.datetime.now().isoformat(timespec='minutes')} — {platform.node()}, "
          f"{device}, torch {torch.__version__}, {args.jobs} jobs\n")
    print("| jobs | RSS (MB) | CUDA allocated (MB) |\n|---|---|---|")

    def report(done, rss, cuda):
        print(f"| {done} | {rss / 2**20:.1f} | {'-' if cuda is None else f'{cuda / 2**20:.1f}'} |", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_dev(pathlib.Path(tmp) / "generator-tiny", size="tiny")
        readings = soak(model_dir, args.jobs, args.every, report)
    change = growth(readings, args.warmup // args.every)
    print(f"\nRSS growth after warm-up ({args.warmup} jobs): {change * 100:+.2f} % (goal ≤ 5 %)")
    return 0 if change <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())

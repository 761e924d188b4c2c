"""Captioner benchmark: ms per photo for the three seed prompts, one table.

    python tests/bench/bench_captioner.py [--quick] [--threads 2] [--reps 3] [--new-tokens 20]

Rows compare, on the same photo and in one run (shared machines are noisy):
- BLIP's own ``generate`` called once per prompt (the image is encoded three times);
- one batched ``generate`` whose batch still encodes the image three times;
- the service path: the image encoded once, its embeddings shared by one batched ``generate``;
- the service path in bf16 and with dynamic int8 quantisation of every Linear layer (CPU);
- fp32 and fp16 on a CUDA GPU when one is present (skipped cleanly otherwise).
Every row generates exactly ``--new-tokens`` tokens per prompt (min = max), so random dev weights
cannot stop early and the rows compare. Default weights: full-size dev weights (the base model's
architecture, random), built in ``.cache/dev-models/captioner-full`` if missing; ``--quick`` uses
tiny ones and one repetition, as a smoke test.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402

from deskgen.common.models import dev_models_dir  # noqa: E402
from deskgen.services.captioner.devweights import build_dev  # noqa: E402
from deskgen.services.captioner.model import BlipCaptioner  # noqa: E402
from deskgen.services.captioner.settings import SEED_PROMPTS  # noqa: E402


def _photo() -> Image.Image:
    """A 640×480 RGB test card (random weights do not care what it shows)."""
    image = Image.linear_gradient("L").resize((640, 480))
    return Image.merge("RGB", (image, image.rotate(90, expand=False), image.transpose(Image.FLIP_LEFT_RIGHT)))


def _cpu_line(threads: int) -> str:
    model, flags = platform.processor() or "cpu", set()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name") and model in ("", "cpu", "x86_64"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    notable = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model} ({os.cpu_count()} visible cores, torch threads {threads}; {' '.join(notable) or 'no AVX flags'})"


def _time(run: Callable[[], None], reps: int, sync: Callable[[], None]) -> tuple[float, list[float]]:
    run()  # warm-up
    sync()
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        run()
        sync()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), samples


def _rows(captioner: BlipCaptioner, image: Image.Image, device: str, reps: int, paths: tuple[str, ...]):
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    pixels = captioner.pixel_values(image)
    tokenizer = captioner.processor.tokenizer

    def sequential():
        with torch.inference_mode():
            for prompt in captioner.prompts:
                inputs = tokenizer(prompt, return_tensors="pt").to(captioner.device)  # generate edits ids in place
                captioner.model.generate(pixel_values=pixels, input_ids=inputs.input_ids,
                                         attention_mask=inputs.attention_mask,
                                         max_new_tokens=captioner.max_new_tokens,
                                         min_new_tokens=captioner.min_new_tokens)

    def batch_encoding_thrice():
        repeated = pixels.expand(len(captioner.prompts), -1, -1, -1)
        captioner.generate(captioner.encode_image(repeated))

    def service():
        captioner.caption(image)

    runs = {"sequential": ("BLIP generate ×3 (image encoded 3×)", sequential),
            "batch3": ("one batch, image encoded 3×", batch_encoding_thrice),
            "service": ("one batch, one shared image encoding", service)}
    for path in paths:
        label, run = runs[path]
        median, samples = _time(run, reps, sync)
        split = ""
        if path == "service":
            timings = captioner.caption(image).timings
            split = f"{timings['vision_ms']:.0f} / {timings['generate_ms']:.0f}"
        yield label, median, samples, split


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny dev weights, one repetition (smoke test)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions per row (after one warm-up)")
    parser.add_argument("--new-tokens", type=int, default=20, help="tokens generated per prompt (min = max)")
    args = parser.parse_args(argv)
    size, reps = ("tiny", 1) if args.quick else ("full", args.reps)
    torch.set_num_threads(args.threads)

    weights = dev_models_dir() / f"captioner-{size}"
    if not (weights / "config.json").is_file():
        build_dev(weights, size=size)
    image = _photo()

    configs = [("cpu", "fp32", ("sequential", "batch3", "service")),
               ("cpu", "bf16", ("service",)),
               ("cpu", "int8", ("sequential", "service"))]
    if torch.cuda.is_available():
        configs += [("cuda", "fp32", ("sequential", "service")), ("cuda", "fp16", ("sequential", "service"))]

    print(f"## Captioner: ms per photo, {len(SEED_PROMPTS)} prompts × {args.new_tokens} new tokens, greedy\n")
    gpu = f"GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "no CUDA GPU: GPU rows skipped"
    architecture = ", base architecture" if size == "full" else ""
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · {_cpu_line(args.threads)} · {gpu}"
          f" · torch {torch.__version__}, transformers {transformers.__version__}"
          f" · {size} dev weights (random{architecture}) · median of {reps} after 1 warm-up\n")
    print("| device | precision | path | ms/photo | × vs CPU fp32 BLIP generate ×3 | vision / generate ms | runs ms |")
    print("|---|---|---|---:|---:|---|---|")
    baseline = None
    for device, precision, paths in configs:
        captioner = BlipCaptioner(weights.as_uri(), SEED_PROMPTS, max_new_tokens=args.new_tokens,
                                  min_new_tokens=args.new_tokens, precision=precision, device=device)
        captioner.load()
        for label, median, samples, split in _rows(captioner, image, device, reps, paths):
            baseline = baseline or median
            print(f"| {device} | {precision} | {label} | {median:.0f} | {baseline / median:.2f} | {split} | "
                  f"{', '.join(f'{s:.0f}' for s in samples)} |", flush=True)
        del captioner
        if device == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())

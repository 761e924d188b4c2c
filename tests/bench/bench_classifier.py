"""Classifier speed: the original VGG16 path against the served paths, side by side in one run.

    python tests/bench/bench_classifier.py [--quick] [--threads N]

Every row times what the service does per photo: preprocessing (a 640×480 photo resized to 224²)
plus the forward pass plus reading the scores, at batch 1 and batch 8. The baseline is the seed's
way, a plain eager fp32 VGG16 (random weights at the real shape: speed does not depend on them).
Rows through ``DeskClassifier`` are exactly the service's code path. GPU rows run when CUDA is
present. ``--quick`` uses the tiny VGG and one timed pass: a smoke run, not a measurement.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import onnxruntime
import torch
from PIL import Image

from deskgen.common.models import ModelSources, dev_models_dir, resolve
from deskgen.services.classifier.checkpoint import load_checkpoint
from deskgen.services.classifier.devweights import build_dev
from deskgen.services.classifier.model import DeskClassifier
from deskgen.services.classifier.networks import preprocessing_for
from deskgen.services.classifier.settings import DEFAULT_MODEL_URI

BATCHES = (1, 8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny VGG, one timed pass: a smoke run")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's, one per core)")
    parser.add_argument("--seconds", type=float, default=6.0, help="time spent per row and batch size")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seconds = 0.0 if args.quick else args.seconds
    vgg_dir = _vgg_weights("tiny" if args.quick else "full")
    photos = [_photo(i) for i in range(max(BATCHES))]

    rows: list[tuple[str, dict[int, float], float]] = []

    def add(label: str, make: Callable[[], Callable[[list[Image.Image]], object]]) -> None:
        started = time.perf_counter()
        score = make()
        load_s = time.perf_counter() - started
        per_image = {n: _time(score, photos[:n], seconds) for n in BATCHES}
        rows.append((label, per_image, load_s))
        print(f"  {label}: " + ", ".join(f"bs{n} {ms:.1f} ms/img" for n, ms in per_image.items()), file=sys.stderr)

    add("VGG16 eager fp32 (baseline)", lambda: _plain(vgg_dir, "vgg16", "cpu", channels_last=False))
    add("VGG16 torch channels-last", lambda: _served(vgg_dir, "torch", args.threads))
    add("VGG16 onnxruntime fp32", lambda: _served(vgg_dir, "onnxruntime", args.threads))
    add("EfficientNet-Lite0 eager fp32", lambda: _plain(DEFAULT_MODEL_URI, "efficientnet_lite0", "cpu", channels_last=False))
    add("EfficientNet-Lite0 torch BN-folded channels-last", lambda: _served(DEFAULT_MODEL_URI, "torch", args.threads))
    add("EfficientNet-Lite0 onnxruntime fp32 (default)", lambda: _served(DEFAULT_MODEL_URI, "onnxruntime", args.threads))
    if torch.cuda.is_available():
        for dtype in (torch.float32, torch.float16):
            name = "fp32" if dtype == torch.float32 else "fp16"
            add(f"GPU VGG16 eager {name}", lambda d=dtype: _plain(vgg_dir, "vgg16", "cuda", dtype=d))
            add(f"GPU EfficientNet-Lite0 eager {name}",
                lambda d=dtype: _plain(DEFAULT_MODEL_URI, "efficientnet_lite0", "cuda", dtype=d))
    else:
        print("  (no CUDA device: GPU rows skipped)", file=sys.stderr)

    _print_table(rows, quick=args.quick, gpu=torch.cuda.is_available())
    return 0


def _served(uri: str | Path, backend: str, threads: int | None):
    classifier = DeskClassifier(str(uri), backend=backend, threads=threads, max_batch=max(BATCHES))
    classifier.load()
    return classifier.score


def _plain(uri: str | Path, arch: str, device: str, *, channels_last: bool = False, dtype=torch.float32):
    """The seed's way: load, then call the module eagerly on preprocessed tensors."""
    _, network = load_checkpoint(resolve(str(uri), ModelSources.load()), arch=arch)
    network = network.to(device=device, dtype=dtype)
    preprocess = preprocessing_for(arch)

    def score(images: list[Image.Image]):
        with torch.inference_mode():
            probs = network(preprocess(images).to(device=device, dtype=dtype)).float().softmax(1).cpu()
        return probs
    return score


def _time(score: Callable, images: list[Image.Image], seconds: float) -> float:
    """Median milliseconds per image over repeated calls (two warm-up calls first)."""
    for _ in range(1 if seconds == 0 else 2):
        score(images)
    samples: list[float] = []
    min_runs = 1 if seconds == 0 else 3
    deadline = time.perf_counter() + seconds
    while len(samples) < min_runs or (time.perf_counter() < deadline and len(samples) < 50):
        started = time.perf_counter()
        score(images)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        samples.append((time.perf_counter() - started) * 1000 / len(images))
    return statistics.median(samples)


def _vgg_weights(size: str) -> Path:
    """VGG16-shaped dev weights: reuse ``deskgen models build-dev`` output, else build them."""
    path = dev_models_dir() / f"classifier-vgg16-{size}"
    if (path / "model.safetensors").exists():
        return path
    return build_dev(Path(tempfile.mkdtemp()) / f"classifier-vgg16-{size}", size=size)


def _photo(seed: int) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    noise = (torch.rand(480, 640, 3, generator=generator) * 255).to(torch.uint8).numpy()
    return Image.fromarray(noise)


def _machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        model = platform.processor() or "unknown CPU"
    cpu = f"{model}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    if torch.cuda.is_available():
        cpu += f"; GPU {torch.cuda.get_device_name()}"
    return cpu


def _print_table(rows, *, quick: bool, gpu: bool) -> None:
    baseline = 1000 / rows[0][1][1]
    print(f"\n### Classifier speed — {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
          f"{' (QUICK smoke run: tiny VGG, not a measurement)' if quick else ''}\n")
    print(f"Machine: {_machine()}. torch {torch.__version__}, onnxruntime {onnxruntime.__version__}. "
          "ms/img = median wall time per photo incl. preprocessing from a 640×480 photo; "
          "× = images/s relative to the baseline's images/s at batch 1.\n")
    print("| path | bs1 ms/img | bs1 img/s | bs8 ms/img | bs8 img/s | × bs1 | × bs8 | load s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, per_image, load_s in rows:
        rates = {n: 1000 / ms for n, ms in per_image.items()}
        print(f"| {label} | {per_image[1]:.1f} | {rates[1]:.1f} | {per_image[8]:.1f} | {rates[8]:.1f} | "
              f"{rates[1] / baseline:.2f} | {rates[8] / baseline:.2f} | {load_s:.1f} |")
    cpu_rows = [r for r in rows if not r[0].startswith("GPU")]
    best = lambda prefix: max((1000 / min(r[1].values()), r[0]) for r in cpu_rows if r[0].startswith(prefix))  # noqa: E731
    default = next(r for r in rows if "(default)" in r[0])
    print(f"\nDefault model (EfficientNet-Lite0, onnxruntime): {1000 / default[1][1] / baseline:.1f}× the baseline at "
          f"bs1, {1000 / default[1][8] / baseline:.1f}× at bs8 (goal ≥10×, stretch ≥15×). "
          f"Best VGG16 path: {best('VGG16')[1]}, {best('VGG16')[0] / baseline:.1f}× (goal ≥1.5×)."
          + ("" if gpu else " No CUDA device: GPU rows skipped."))


if __name__ == "__main__":
    raise SystemExit(main())

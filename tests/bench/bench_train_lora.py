"""LoRA training benchmark: steps/s and peak memory of ``deskgen train lora``, checkpointing off and on.

    python tests/bench/bench_train_lora.py                       # CUDA: full SDXL, 1024², rank 16, 30 steps
    python tests/bench/bench_train_lora.py --device cpu --size full --resolution 1024 --steps 1
    python tests/bench/bench_train_lora.py --device cpu --size tiny --resolution 64 --steps 5   # smoke

Each configuration trains in its own process (peak RSS is per process) on eight drawn 4:3 photos with
caption files, latents and text embeddings cached (their time is reported apart from the steps'). On
CUDA the frozen parts are fp16 (the generator's default) and peak GPU memory is torch's
``max_memory_allocated``. The last column projects the seed's 366-photo LoRA (3,000 steps).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = pathlib.Path(__file__).resolve().parents[2]

SEED_STEPS = 3000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda")
    parser.add_argument("--size", choices=("tiny", "full"), default="full", help="dev SDXL architecture size")
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per configuration")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--dtype", default="auto", choices=("auto", "float16", "bfloat16", "float32"),
                        help="dtype of the frozen parts (auto: fp16 on cuda, fp32 on cpu)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_run_one(args, args.one == "checkpointing")))
        return 0

    import torch

    cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_train_lora: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    where = torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores, {platform.processor() or '?'})"
    print(f"# bench_train_lora — {datetime.datetime.now().isoformat(timespec='minutes')} — {platform.node()}, "
          f"{where}, torch {torch.__version__}; dev-random {args.size} SDXL, {args.resolution}² buckets, batch 1, "
          f"rank {args.rank}, frozen parts {args.dtype}, cached latents\n")
    print("| gradient checkpointing | steps | encode s | s/step | steps/s | peak memory GiB | 3,000 steps |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode in ("plain", "checkpointing"):
        command = [sys.executable, __file__, "--one", mode, "--device", args.device, "--size", args.size,
                   "--resolution", str(args.resolution), "--steps", str(args.steps), "--rank", str(args.rank),
                   "--dtype", args.dtype]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"| {mode} | failed: {done.stderr.strip().splitlines()[-1:]} | | | | | |")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        per_step = row["train_s"] / row["steps"]
        print(f"| {'on' if mode == 'checkpointing' else 'off'} | {row['steps']} | {row['encode_s']:.1f} | "
              f"{per_step:.2f} | {1 / per_step:.2f} | {row['peak_gib']:.1f} | "
              f"{SEED_STEPS * per_step / 60:.0f} min |")
    return 0


def _run_one(args, checkpointing: bool) -> dict:
    import torch

    from deskgen.common.models import dev_models_dir
    from deskgen.services.generator.devweights import build_dev
    from deskgen.services.generator.train_lora import LoraTraining, train_lora

    base = dev_models_dir() / f"generator-{args.size}"
    if not (base / "model_index.json").is_file():
        build_dev(base, size=args.size)
    with tempfile.TemporaryDirectory() as scratch:
        data = pathlib.Path(scratch) / "photos"
        _photos(data, args.resolution)
        job = LoraTraining(base=f"file://{base}", data=str(data), out=pathlib.Path(scratch) / "out", rank=args.rank,
                           alpha=args.rank, steps=args.steps, resolution=args.resolution, device=args.device,
                           dtype=args.dtype,
                           gradient_checkpointing=checkpointing, checkpoint_every=0, validation_steps=0)
        if torch.cuda.is_available() and args.device != "cpu":
            torch.cuda.reset_peak_memory_stats()
        report = train_lora(job)
    if torch.cuda.is_available() and args.device != "cpu":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return {"steps": args.steps, "encode_s": report.seconds["encode"], "train_s": report.seconds["train"],
            "peak_gib": peak}


def _photos(folder: pathlib.Path, resolution: int) -> None:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True)
    width, height = resolution * 4 // 3, resolution
    for i in range(8):
        image = Image.new("RGB", (width, height), (40 + 20 * i, 90, 160))
        ImageDraw.Draw(image).rectangle([width // 4, height // 3, width * 3 // 4, height * 2 // 3],
                                        fill=(230, 230, 230))
        image.save(folder / f"desk-{i}.jpg")
        (folder / f"desk-{i}.txt").write_text("a desk setup with a monitor, soft light")


if __name__ == "__main__":
    raise SystemExit(main())

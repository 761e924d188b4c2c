"""Captioner benchmark: ms per photo and fidelity of every path, photos/s per pod by batch size, one table each.

    python tests/bench/bench_captioner.py [--quick] [--threads 2] [--reps 3] [--new-tokens 20] [--isa native,avx2]
                                          [--gpu]

Each ``--isa`` runs in its own process (the caps must be set before torch loads): ``native`` as the CPU is,
``avx2`` with ``ATEN_CPU_CAPABILITY=avx2`` (torch's own kernels and the code ``torch.compile`` generates),
``ONEDNN_MAX_CPU_ISA=AVX2`` (oneDNN) and ``MKL_ENABLE_INSTRUCTIONS=AVX2`` (MKL, torch's fp32 matrix products).
ONNX Runtime's MLAS picks its kernels from CPUID at run time and has no cap (only build options), so its rows in
the ``avx2`` run still use the CPU's best instructions: the table says so.

Paths, on the same photos and in one process, their repetitions interleaved so load from other processes
hits every path alike:
- the service path (image encoded once, prompts as one batch) in torch fp32 (the reference), bf16
  (only where the CPU has native bf16), dynamic int8, torch fp32 with a static KV cache under
  ``torch.compile`` (``static_blip``; its compile time is printed, not timed in the row), and on ONNX Runtime
  fp32 and dynamic int8 with QUInt8 and with QInt8 weights;
- ``--gpu``: instead, torch fp32 and fp16 (the service's GPU default) on a CUDA GPU, against the same CPU fp32
  reference (``make bench-gpu``).
Fidelity against torch fp32 on the same weights and photos: the share of greedy tokens that agree when each
path decodes freely, and, teacher-forced on fp32's tokens, the share of positions whose top token agrees and
the mean KL(fp32 ‖ path) of the next-token distributions. Random dev weights make many near-ties, and one
flipped token changes the rest of a freely decoded row, so the teacher-forced agreement is the one that
decides: a path below 95 % there is not a default. Photos/s per pod at batches of 1, 4 and 8 photos are
measured on the ISA's default path (``model.CPU_PATHS``; with ``--gpu``, CUDA fp16). Every row generates exactly ``--new-tokens`` tokens per
prompt (min = max). Default weights: full-size dev weights (the base model's architecture, random), built in
``.cache/dev-models/captioner-full`` if missing; ``--quick``: tiny ones, one repetition (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ISA_CAPS = {"native": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                                   "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}
RUN_LABELS = {"native": "native", "avx2": "torch ISA capped at AVX2"}
ROOT = Path(__file__).resolve().parents[2]


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
    notable = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
               if f in flags]
    return f"{model} ({os.cpu_count()} visible cores, {threads} threads; {' '.join(notable) or 'no AVX flags'})"


# -- one ISA's run (a child process) -------------------------------------------------------------


def _photos(count: int):
    """Distinct 640×480 RGB photos: a test card, then random noise (random weights do not care what they show)."""
    import numpy as np
    from PIL import Image

    card = Image.linear_gradient("L").resize((640, 480))
    photos = [Image.merge("RGB", (card, card.rotate(90), card.transpose(Image.FLIP_LEFT_RIGHT)))]
    rng = np.random.default_rng(0)
    photos += [Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) for _ in range(count - 1)]
    return photos


def _child(args: argparse.Namespace) -> None:
    """Time and compare every path under this process's ISA; one JSON line per row on stdout."""
    import torch

    from deskgen.common.models import dev_models_dir
    from deskgen.services.captioner.devweights import build_dev
    from deskgen.services.captioner.model import CPU_PATHS, BlipCaptioner, cpu_isa, int8_weight_type
    from deskgen.services.captioner.settings import SEED_PROMPTS

    torch.set_num_threads(args.threads)
    size = "tiny" if args.quick else "full"
    weights = dev_models_dir() / f"captioner-{size}"
    if not (weights / "config.json").is_file():
        build_dev(weights, size=size)
    isa = cpu_isa()
    cache = ROOT / ".cache" / "captioner-onnx"

    def build(backend: str, precision: str, device: str = "cpu") -> BlipCaptioner:
        model = BlipCaptioner(weights.as_uri(), SEED_PROMPTS, max_new_tokens=args.new_tokens,
                              min_new_tokens=args.new_tokens, precision=precision, device=device, backend=backend,
                              onnx_cache=cache, threads=args.threads)
        model.load()
        return model

    reference = build("torch", "fp32")
    paths: dict[str, tuple[BlipCaptioner, Callable]] = {}
    photos = _photos(2)
    backend, precision = CPU_PATHS[isa]
    default = f"onnxruntime {int8_weight_type(isa)}" if (backend, precision) == ("onnxruntime", "int8") else \
        f"{backend} {precision}"

    candidates = [] if args.gpu else [("torch", "fp32"), ("torch", "bf16"), ("torch", "int8"), ("torch_compile", "fp32"),
                                      ("onnxruntime", "fp32"), ("onnxruntime", "QUInt8"), ("onnxruntime", "QInt8")]
    for backend, precision in candidates:
        if precision == "bf16" and isa not in ("amx", "avx512_bf16"):
            continue  # emulated without native bf16: tens of seconds per photo
        if backend == "onnxruntime":
            model = _onnx_int8(build, precision) if precision.startswith("Q") else build(backend, precision)
        else:
            model = reference if precision == "fp32" else build(backend, precision)
        paths[f"{backend} {precision}"] = (model, lambda image, m=model: m.caption(image))
    if args.gpu:
        default = "cuda torch fp16"
        for precision in ("fp32", "fp16"):
            model = build("torch", precision, "cuda")
            paths[f"cuda torch {precision}"] = (model, lambda image, m=model: (m.caption(image),
                                                                               torch.cuda.synchronize()))

    reps = 1 if args.quick else args.reps
    samples: dict[str, list[float]] = {name: [] for name in paths}
    splits: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    warm_up: dict[str, float] = {}
    for name, (_, run) in paths.items():
        started = time.perf_counter()
        run(photos[0])  # warm-up (torch_compile: its compile for one photo)
        warm_up[name] = (time.perf_counter() - started) * 1000
    for _ in range(reps):
        for name, (model, run) in paths.items():
            started = time.perf_counter()
            result = run(photos[0])
            samples[name].append((time.perf_counter() - started) * 1000)
            timings = (result[0] if isinstance(result, tuple) else result).timings
            splits[name].append((timings["vision_ms"], timings["generate_ms"]))

    fidelity_reference = _decode(reference, photos)
    for name, (model, _) in paths.items():
        row = {"isa": isa, "path": name, "ms": statistics.median(samples[name]), "runs": samples[name],
               "default": name == default, "split": [statistics.median(s) for s in zip(*splits[name])],
               "warm_up": warm_up[name]}
        row.update(_fidelity(model, photos, fidelity_reference))
        print(json.dumps(row), flush=True)
    if default in paths:
        _throughput(default, paths[default][0], isa, args)


def _onnx_int8(build, weight_type: str):
    """An ONNX Runtime int8 captioner with ``weight_type`` weights, whatever the ISA would choose (the bench
    compares both)."""
    from deskgen.services.captioner import model as captioner_model

    chosen = captioner_model.int8_weight_type
    captioner_model.int8_weight_type = lambda isa: weight_type
    try:
        return build("onnxruntime", "int8")
    finally:
        captioner_model.int8_weight_type = chosen


def _decode(model, photos):
    """fp32's image states, free-running tokens and teacher-forced logits for ``photos``."""
    import torch

    pixels = torch.cat([model.pixel_values(p) for p in photos])
    image = model.encode_image(pixels)
    sequences = model.generate(image)
    return {"sequences": sequences, "logits": model.next_token_logits(image, sequences)}


def _fidelity(model, photos, reference) -> dict:
    import torch

    pixels = torch.cat([model.pixel_values(p) for p in photos]).to(model.device)
    image = model.encode_image(pixels)
    new = reference["logits"].shape[1]
    sequences = model.generate(image).cpu()
    free = (sequences[:, -new:] == reference["sequences"][:, -new:]).float().mean().item()
    logits = model.next_token_logits(image, reference["sequences"].to(model.device)).float().cpu()
    expected = reference["logits"].log_softmax(-1)
    got = logits.log_softmax(-1)
    kl = (expected.exp() * (expected - got)).sum(-1).mean().item()
    forced = (logits.argmax(-1) == reference["logits"].argmax(-1)).float().mean().item()
    top2 = reference["logits"].softmax(-1).topk(2, dim=-1).values
    near_ties = ((top2[..., 0] - top2[..., 1]) < 0.01).float().mean().item()
    return {"free": free, "forced": forced, "kl": kl, "near_ties": near_ties}


def _throughput(name: str, model, isa: str, args) -> None:
    """Photos/s of one pod (this process's threads) captioning batches of 1, 4 and 8 photos."""
    photos = _photos(8)
    model.caption_many(photos[:1])
    for batch in (1, 4, 8):
        started = time.perf_counter()
        model.caption_many(photos[:batch])
        seconds = time.perf_counter() - started
        print(json.dumps({"isa": isa, "throughput": name, "batch": batch, "photos_s": batch / seconds,
                          "ms_per_photo": seconds * 1000 / batch}), flush=True)


# -- the parent: one child per ISA, one table ----------------------------------------------------


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny dev weights, one repetition (smoke test)")
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime CPU threads")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions per row (after one warm-up)")
    parser.add_argument("--new-tokens", type=int, default=20, help="tokens generated per prompt (min = max)")
    parser.add_argument("--isa", default="native,avx2", help="comma-separated runs: native, avx2")
    parser.add_argument("--gpu", action="store_true", help="only torch fp32/fp16 on a CUDA GPU (against CPU fp32)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.gpu and not _cuda():
        print("bench_captioner --gpu: no CUDA device here (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    if args.child:
        _child(args)
        return 0

    import onnxruntime
    import torch
    import transformers

    size = "tiny" if args.quick else "full"
    reps = 1 if args.quick else args.reps
    print(f"## Captioner: ms per photo, 3 prompts × {args.new_tokens} new tokens, greedy\n")
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · {_cpu_line(args.threads)} · torch {torch.__version__}, "
          f"transformers {transformers.__version__}, onnxruntime {onnxruntime.__version__} · {size} dev weights "
          f"(random) · median of {reps} after 1 warm-up · load average before: {_load()}\n")
    rows, throughput, failed = [], [], []
    for isa in args.isa.split(","):
        child_args = [a for a in (argv if argv is not None else sys.argv[1:])] + ["--child"]
        env = {**os.environ, **ISA_CAPS[isa]}
        done = subprocess.run([sys.executable, __file__, *child_args], env=env, capture_output=True, text=True)
        if done.returncode:  # the other runs' rows are still printed
            failed.append(f"{isa} run failed:\n{done.stderr[-3000:]}")
        for line in done.stdout.splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                row["run"] = isa
                (throughput if "throughput" in row else rows).append(row)
    print("| run (torch ISA) | path | ms/photo | × vs torch fp32 | vision / generate ms | greedy tokens agree "
          "| teacher-forced top-1 agree | mean KL(fp32 ‖ path) | default | runs ms |")
    print("|---|---|---:|---:|---|---:|---:|---:|---|---|")
    for run in dict.fromkeys(r["run"] for r in rows):
        group = [r for r in rows if r["run"] == run]
        baseline = group[0]["ms"]
        for r in group:
            mlas = " (MLAS uncapped: AVX-512)" if run != "native" and r["path"].startswith("onnxruntime") else ""
            split = " / ".join(f"{x:.0f}" for x in r["split"])
            fidelity = f"{r['free']:.1%} | {r['forced']:.1%} | {max(r['kl'], 0):.2g}"
            print(f"| {RUN_LABELS[run]} ({r['isa']}) | {r['path']}{mlas} | {r['ms']:.0f} | {baseline / r['ms']:.2f} | {split} | "
                  f"{fidelity} | {'**auto**' if r['default'] else ''} | {', '.join(f'{s:.0f}' for s in r['runs'])} |")
    if rows:
        print(f"\nNear-ties: fp32's top two next-token probabilities are within 0.01 at "
              f"{rows[-1].get('near_ties', 0):.0%} of the teacher-forced positions (random weights).")
        for r in rows:
            if r["path"].startswith("torch_compile"):
                print(f"{RUN_LABELS[r['run']]}: {r['path']}'s first photo (its compile) took {r['warm_up'] / 1000:.0f} s.")
    print("\n| run (torch ISA) | path | photos per batch | photos/s per pod | ms/photo |")
    print("|---|---|---:|---:|---:|")
    for t in throughput:
        print(f"| {RUN_LABELS[t['run']]} ({t['isa']}) | {t['throughput']} | {t['batch']} | {t['photos_s']:.2f} | "
              f"{t['ms_per_photo']:.0f} |")
    print(f"\nload average after: {_load()} (above {args.threads} means other processes shared the cores)")
    print("\n".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

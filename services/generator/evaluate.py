"""``deskgen eval presets``: the seed's two test prompts across its seven presets.

Writes ``contact-sheet.png`` (rows = prompts, columns = presets, labelled) and ``presets.md``
(preset | adapters | latency s | peak VRAM GB, the seed's layout) to ``--out``, and prints the table.
Model and LoRA URIs, device and defaults come from the ``DESKGEN_GENERATOR_*`` settings unless
given as options. On dev weights the images are noise-like and say nothing about quality: the
table says which weights ran.
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import platform

import torch
from PIL import Image, ImageDraw

from deskgen.common.errors import FatalError
from deskgen.common.models import DEV_WEIGHTS, ModelSources, identify, resolve
from deskgen.common.settings import load
from deskgen.services.generator.model import FAST_ADAPTER, GenerationOptions, GeneratorModel, build_model
from deskgen.services.generator.presets import evaluation_prompts, load_presets
from deskgen.services.generator.request import derive_seed
from deskgen.services.generator.settings import GeneratorSettings

__all__ = ["cli", "evaluate_presets"]

_LABEL_HEIGHT = 20
_LABEL_WIDTH = 90


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="deskgen eval presets", description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", choices=("seed",), default="seed", help="prompt set (the seed's two)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("out/eval-presets"), help="output folder")
    parser.add_argument("--model", metavar="URI", help="base model URI (default: DESKGEN_GENERATOR_MODEL)")
    parser.add_argument("--lora", metavar="NAME=URI", action="append", default=[],
                        help="adapter URI (repeatable; default: the settings, or <model>/loras/NAME for dev weights)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: DESKGEN_GENERATOR_STEPS)")
    parser.add_argument("--size", type=int, help="square image side (default: the settings' width × height)")
    parser.add_argument("--cell", type=int, default=256, help="contact-sheet cell side in pixels")
    args = parser.parse_args(argv)

    try:
        settings = load(GeneratorSettings)
        lora_uris = dict(item.split("=", 1) for item in args.lora)
        model_uri = args.model or settings.model
        base = resolve(model_uri, ModelSources.load())
        if identify(model_uri, base).weights == DEV_WEIGHTS:
            lora_uris = {name: str(base / "loras" / name)
                         for name in (*load_presets().adapters, FAST_ADAPTER)} | lora_uris
        model = build_model(settings, model_uri=model_uri, lora_uris=lora_uris, warmup=False)
        model.load()
    except FatalError as exc:
        print(f"deskgen eval presets: {exc}")
        return 2
    prompts, negative_prompt = evaluation_prompts()
    options = GenerationOptions(steps=args.steps or settings.steps, guidance=settings.guidance,
                                width=args.size or settings.width, height=args.size or settings.height,
                                scheduler=settings.scheduler, seed=0)
    table = evaluate_presets(model, prompts, negative_prompt, options, args.out, cell=args.cell)
    print(table)
    print(f"wrote {args.out / 'contact-sheet.png'} and {args.out / 'presets.md'}")
    return 0


def evaluate_presets(model: GeneratorModel, prompts: list[str], negative_prompt: str, options: GenerationOptions,
                     out: pathlib.Path, *, cell: int = 256) -> str:
    """Generate every (prompt, seed preset) pair, write the contact sheet and the table; return the table."""
    presets = model.presets.names("seed")
    # One untimed generation first, so the first preset does not pay the warm-up.
    model.generate(prompts[0], negative_prompt, model.presets.presets[presets[0]], options)
    sheet = Image.new("RGB", (_LABEL_WIDTH + cell * len(presets), _LABEL_HEIGHT + cell * len(prompts)), "white")
    draw = ImageDraw.Draw(sheet)
    rows = []
    for column, name in enumerate(presets):
        preset = model.presets.presets[name]
        draw.text((_LABEL_WIDTH + column * cell + 4, 4), name, fill="black")
        latencies, peaks = [], []
        for row, prompt in enumerate(prompts):
            seeded = GenerationOptions(**{**options.__dict__, "seed": derive_seed(f"eval-prompt-{row}")})
            result = model.generate(prompt, negative_prompt, preset, seeded)
            latencies.append(result.inference_ms / 1000)
            peaks.append(result.peak_gpu_mem_bytes)
            sheet.paste(result.image.resize((cell, cell), Image.Resampling.LANCZOS),
                        (_LABEL_WIDTH + column * cell, _LABEL_HEIGHT + row * cell))
        adapters = ", ".join(f"{adapter} {weight:g}" for adapter, weight in preset.mix)
        vram = "n/a (cpu)" if None in peaks else f"{max(peaks) / 1e9:.2f}"
        rows.append(f"| {name} | {adapters} | {sum(latencies) / len(latencies):.2f} | {vram} |")
    for row in range(len(prompts)):
        draw.text((4, _LABEL_HEIGHT + row * cell + 4), f"prompt {row + 1}", fill="black")
    placement, card = model.placement, model.card
    device = torch.cuda.get_device_name(placement.device) if placement.cuda else platform.processor() or "cpu"
    header = [
        f"# Preset evaluation — {datetime.date.today().isoformat()}",
        "",
        f"machine: {platform.node()} ({device}, {placement.device}, {str(placement.dtype).removeprefix('torch.')}); "
        f"model: {card.name} @ {card.version}; weights: **{card.weights}**"
        + (" (random: latencies are real, images are meaningless)" if card.weights == DEV_WEIGHTS else ""),
        f"{options.width}×{options.height}, {options.steps} steps, guidance {options.guidance:g}, "
        f"scheduler {options.scheduler}; latency = mean over {len(prompts)} prompts",
        "",
        "| preset | adapters | latency s | peak VRAM GB |",
        "|---|---|---|---|",
    ]
    table = "\n".join(header + rows) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    sheet.save(out / "contact-sheet.png")
    (out / "presets.md").write_text(table)
    return table

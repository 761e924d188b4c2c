"""``deskgen train lora``: a style LoRA for the generator's SDXL, trained on a folder of photos.

The photos come from a folder or an ``s3://bucket/prefix`` (fetched through the model resolver); captions,
aspect buckets and the cached encodings are ``lora_data``'s, so a step runs only the UNet. The LoRA sits on
the UNet's attention projections; the frozen parts run in the placement's dtype (fp16/bf16 on a GPU),
the LoRA's parameters train in fp32 under autocast. Batches never mix buckets.

The output folder holds ``pytorch_lora_weights.safetensors`` (the diffusers layout the generator loads),
``<name>.kohya.safetensors`` (the same adapter in the Kohya layout other SDXL tools load),
``adapter-card.json`` (base model, steps, rank, dataset hash, final loss, weights real or dev-random),
validation images of the seed's two test prompts, and ``checkpoints/step-N`` for ``--resume``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

import torch

from deskgen.common.errors import DeskgenError, FatalError
from deskgen.common.models import DEV_WEIGHTS, ModelSources, identify, resolve
from deskgen.common.settings import load
from deskgen.services.generator.components import LORA_FILE, Placement
from deskgen.services.generator.geometry import Size, buckets
from deskgen.services.generator.lora_data import collect_examples, dataset_hash, encode_examples
from deskgen.services.generator.presets import evaluation_prompts

__all__ = ["LoraTraining", "TrainedLora", "train_lora", "upload", "cli", "CARD_FILE",
           "TARGET_MODULES"]

CARD_FILE = "adapter-card.json"
TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")  # the UNet's attention projections


@dataclass(frozen=True)
class LoraTraining:
    """What to train and how; see ``cli`` for each option's meaning."""

    base: str
    data: str
    out: Path
    name: str = "style"
    rank: int = 16
    alpha: float = 16.0
    learning_rate: float = 1e-4
    steps: int = 1000
    batch_size: int = 1
    resolution: int = 1024
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    gradient_checkpointing: bool = False
    adam8bit: bool = False
    checkpoint_every: int = 250
    resume: bool = False
    upload: str = ""  # s3://bucket/prefix: where the adapter folder is copied (a URI the generator loads)
    trigger: str = ""
    caption_model: str = ""
    validation_steps: int = 30


@dataclass
class TrainedLora:
    out: Path
    losses: list[float] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # photo → why it was left out
    card: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # load, encode, train, save


def train_lora(job: LoraTraining, sources: ModelSources = ModelSources()) -> TrainedLora:
    """Train, save the adapter (both layouts), its card and validation images; resume from checkpoints."""
    from diffusers import DDPMScheduler, StableDiffusionXLPipeline
    from peft import LoraConfig

    if job.steps < 1 or job.rank < 1 or job.batch_size < 1:
        raise FatalError("steps, rank and batch size must be ≥ 1")
    if job.upload and not _s3_target(job.upload):  # before hours of training, not after
        raise FatalError(f"--upload {job.upload!r}: use s3://bucket/prefix")
    report = TrainedLora(job.out)
    bucket_sizes = buckets(job.resolution, 8)
    examples = collect_examples(resolve(job.data, sources), bucket_sizes, trigger=job.trigger,
                                caption_model=job.caption_model, sources=sources, skipped=report.skipped)
    for photo, why in report.skipped.items():
        print(f"skipped {photo}: {why}", flush=True)
    placement = Placement.pick(job.device, job.dtype)
    torch.manual_seed(job.seed)
    clock = _Clock(report.seconds, placement)
    base_dir = resolve(job.base, sources)
    pipe = StableDiffusionXLPipeline.from_pretrained(base_dir, dtype=placement.dtype, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(placement.device)
    clock.lap("load")
    cache = encode_examples(pipe, examples, placement)
    clock.lap("encode")
    unet = pipe.unet
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=job.rank, lora_alpha=job.alpha, init_lora_weights="gaussian",
                                target_modules=list(TARGET_MODULES)))
    params = [p for p in unet.parameters() if p.requires_grad]
    for param in params:
        param.data = param.data.float()
    if job.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    optimizer = _optimizer(params, job)
    generator = torch.Generator().manual_seed(job.seed)
    start = _resume(job, unet, optimizer, generator) if job.resume else 0
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    unet.train()
    report.losses = _loop(job, unet, noise_scheduler, optimizer, params, cache, placement, start, generator)
    clock.lap("train")
    unet.eval()
    base_card = identify(job.base, base_dir)
    report.card = _save(job, pipe, examples, report, base_card, placement)
    if job.upload:
        upload(job.out, job.upload, sources)
    clock.lap("save")
    return report


def upload(folder: Path, uri: str, sources: ModelSources) -> list[str]:
    """Copy the adapter folder (not its checkpoints) to ``s3://bucket/prefix``; returns the keys written.

    Raises:
        FatalError: not an s3:// URI, no S3 settings, or the server refused.
    """
    from deskgen.common.storage import ObjectStore

    target = _s3_target(uri)
    if target is None:
        raise FatalError(f"--upload {uri!r}: use s3://bucket/prefix")
    if sources.s3 is None:
        raise FatalError(f"--upload {uri}: no S3 settings (DESKGEN_S3_*) were given")
    store = ObjectStore(sources.s3, bucket=target.netloc)
    prefix = target.path.strip("/")
    keys = []
    try:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and "checkpoints" not in p.parts):
            key = f"{prefix}/{path.relative_to(folder)}".lstrip("/")
            store.put(key, path.read_bytes(), "image/png" if path.suffix == ".png" else "application/octet-stream")
            keys.append(key)
    except DeskgenError as exc:
        raise FatalError(f"--upload {uri}: {exc}") from None
    print(f"uploaded {len(keys)} files to {uri} (a LoRA URI the generator loads)", flush=True)
    return keys


class _Clock:
    """Seconds per phase into ``laps`` (CUDA synchronised, so a lap holds its own kernels)."""

    def __init__(self, laps: dict[str, float], placement: Placement):
        self.laps, self.placement, self.last = laps, placement, time.perf_counter()

    def lap(self, name: str) -> None:
        if self.placement.cuda:
            torch.cuda.synchronize(self.placement.device)
        now = time.perf_counter()
        self.laps[name] = now - self.last
        self.last = now


def _s3_target(uri: str):
    parsed = urlparse(uri)
    return parsed if parsed.scheme == "s3" and parsed.netloc else None


def _optimizer(params, job: LoraTraining) -> torch.optim.Optimizer:
    if not job.adam8bit:
        return torch.optim.AdamW(params, lr=job.learning_rate, weight_decay=1e-2)
    try:
        import bitsandbytes  # pyright: ignore[reportMissingImports]  # optional, GPU only
    except ImportError:
        raise FatalError("--adam8bit needs bitsandbytes (pip install bitsandbytes; CUDA only)") from None
    return bitsandbytes.optim.AdamW8bit(params, lr=job.learning_rate, weight_decay=1e-2)


def _loop(job: LoraTraining, unet, noise_scheduler, optimizer, params, cache: list[dict],
          placement: Placement, start: int, generator: torch.Generator) -> list[float]:
    """The training steps from ``start``: a bucket drawn by its share of photos, a batch from it, the
    denoising loss of a random timestep (epsilon or v target, as the scheduler predicts). ``generator``
    draws noise and timesteps; a resumed run continues its state, so resuming changes no step."""
    from tqdm.auto import tqdm

    by_bucket: dict[Size, list[dict]] = {}
    for item in cache:
        by_bucket.setdefault(item["bucket"], []).append(item)
    sizes = sorted(by_bucket)
    draw = random.Random(job.seed)
    for _ in range(start):  # a resumed run draws the batches the whole run would have drawn
        _batch(draw, by_bucket, sizes, job.batch_size)
    autocast = torch.autocast(placement.device.type, dtype=placement.dtype,
                              enabled=placement.dtype != torch.float32)
    losses: list[float] = []
    bar = tqdm(range(start, job.steps), desc=f"lora {job.name}", unit="step", initial=start, total=job.steps)
    for step in bar:
        batch = _batch(draw, by_bucket, sizes, job.batch_size)
        mean = torch.cat([b["mean"] for b in batch])
        std = torch.cat([b["std"] for b in batch])
        latents = mean + std * torch.randn(mean.shape, generator=generator)
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(batch),), generator=generator)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        target = noise if noise_scheduler.config.prediction_type == "epsilon" \
            else noise_scheduler.get_velocity(latents, noise, timesteps)
        device = placement.device
        with autocast:
            predicted = unet(noisy.to(device, placement.dtype), timesteps.to(device),
                             encoder_hidden_states=torch.cat([b["embeds"] for b in batch]).to(device),
                             added_cond_kwargs={"text_embeds": torch.cat([b["pooled"] for b in batch]).to(device),
                                                "time_ids": torch.stack([b["time_ids"] for b in batch]).to(device)},
                             return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(predicted.float(), target.to(device).float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if job.checkpoint_every and (step + 1) % job.checkpoint_every == 0 and step + 1 < job.steps:
            _checkpoint(job, unet, optimizer, generator, step + 1)
    bar.close()
    return losses


def _batch(draw: random.Random, by_bucket: dict[Size, list[dict]], sizes: list[Size], size: int) -> list[dict]:
    bucket = draw.choices(sizes, weights=[len(by_bucket[s]) for s in sizes])[0]
    return draw.choices(by_bucket[bucket], k=size)


def _checkpoint(job: LoraTraining, unet, optimizer, generator: torch.Generator, step: int) -> None:
    from peft.utils import get_peft_model_state_dict

    folder = job.out / "checkpoints" / f"step-{step}"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"step": step, "lora": get_peft_model_state_dict(unet), "optimizer": optimizer.state_dict(),
                "generator": generator.get_state()}, folder / "state.pt")
    print(f"checkpoint {folder}", flush=True)


def _resume(job: LoraTraining, unet, optimizer, generator: torch.Generator) -> int:
    """The step of the latest checkpoint, its LoRA, optimizer and generator state loaded; 0 when none."""
    from peft.utils import set_peft_model_state_dict

    found = sorted((job.out / "checkpoints").glob("step-*/state.pt"), key=lambda p: int(p.parent.name[5:]))
    if not found:
        print(f"no checkpoint under {job.out / 'checkpoints'}: starting at step 0", flush=True)
        return 0
    state = torch.load(found[-1], map_location="cpu")
    set_peft_model_state_dict(unet, state["lora"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    print(f"resumed from {found[-1].parent} (step {state['step']})", flush=True)
    return int(state["step"])


def _save(job: LoraTraining, pipe, examples, report: TrainedLora, base_card, placement: Placement) -> dict:
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_kohya
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    job.out.mkdir(parents=True, exist_ok=True)
    lora = get_peft_model_state_dict(pipe.unet)
    pipe.save_lora_weights(job.out, unet_lora_layers=convert_state_dict_to_diffusers(lora),
                           weight_name=LORA_FILE)
    kohya = convert_state_dict_to_kohya({f"unet.{k}": v for k, v in lora.items()})
    save_file({k: v.contiguous() for k, v in kohya.items()}, str(job.out / f"{job.name}.kohya.safetensors"))
    tail = report.losses[-max(1, len(report.losses) // 10):]
    card = {
        "name": job.name,
        "base_model": base_card.as_dict(),
        "weights": base_card.weights,
        "steps": job.steps,
        "rank": job.rank,
        "alpha": job.alpha,
        "learning_rate": job.learning_rate,
        "batch_size": job.batch_size,
        "resolution": job.resolution,
        "seed": job.seed,
        "placement": str(placement),
        "dataset": {"photos": len(examples), "skipped": len(report.skipped),
                    "sha256": dataset_hash([e for e, _ in examples])},
        "final_loss": round(sum(tail) / len(tail), 5) if tail else None,
        "trigger": job.trigger,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (job.out / CARD_FILE).write_text(json.dumps(card, indent=1) + "\n")
    _validate(job, pipe, placement)
    return card


def _validate(job: LoraTraining, pipe, placement: Placement) -> None:
    """The seed's Test-1 and Test-2 prompts with the new adapter, at the square bucket, seeded."""
    if not job.validation_steps:
        return
    prompts, negative = evaluation_prompts()
    folder = job.out / "validation"
    folder.mkdir(exist_ok=True)
    side = buckets(job.resolution, 8)[0]
    for number, prompt in enumerate(prompts, start=1):
        text = f"{job.trigger}, {prompt}" if job.trigger else prompt
        image = pipe(text, negative_prompt=negative, width=side[0], height=side[1],
                     num_inference_steps=job.validation_steps,
                     generator=torch.Generator(placement.device).manual_seed(job.seed)).images[0]
        image.save(folder / f"test-{number}.png")


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="deskgen train lora", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="photos: a folder, file:// or s3://bucket/prefix "
                        "(captions: <photo>.txt beside each; missing ones come from the captioner)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--base", help="base SDXL pipeline URI (default: DESKGEN_GENERATOR_MODEL)")
    parser.add_argument("--name", default="style", help="adapter name (file names and card)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--alpha", type=float, help="LoRA alpha (default: the rank)")
    parser.add_argument("--lr", type=float, default=1e-4, help="learning rate")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--resolution", type=int, help="bucket resolution (default: the generator's, 1024)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default: the generator's)")
    parser.add_argument("--dtype", default=None, choices=("auto", "float16", "bfloat16", "float32"),
                        help="dtype of the frozen parts (the LoRA trains in fp32; default: the generator's)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="less memory, ~30 %% slower")
    parser.add_argument("--adam8bit", action="store_true", help="8-bit AdamW (bitsandbytes, CUDA)")
    parser.add_argument("--checkpoint-every", type=int, default=250, help="steps between checkpoints (0: none)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument("--trigger", default="", help="a word put before every caption")
    parser.add_argument("--caption-model", default="", help="BLIP URI for missing captions "
                        "(default: DESKGEN_CAPTIONER_MODEL)")
    parser.add_argument("--validation-steps", type=int, default=30, help="steps of the validation images (0: none)")
    parser.add_argument("--upload", default="", metavar="s3://BUCKET/PREFIX",
                        help="copy the adapter folder there (a LoRA URI for the generator's settings)")
    args = parser.parse_args(argv)

    from deskgen.services.generator.settings import GeneratorSettings

    generator = load(GeneratorSettings)
    job = LoraTraining(base=args.base or generator.model, data=args.data, out=args.out, name=args.name,
                       rank=args.rank, alpha=args.alpha or float(args.rank), learning_rate=args.lr,
                       steps=args.steps, batch_size=args.batch_size,
                       resolution=args.resolution or generator.bucket_resolution, seed=args.seed,
                       device=args.device or generator.device, dtype=args.dtype or generator.dtype,
                       gradient_checkpointing=args.gradient_checkpointing, adam8bit=args.adam8bit,
                       checkpoint_every=args.checkpoint_every, resume=args.resume, trigger=args.trigger,
                       caption_model=args.caption_model, validation_steps=args.validation_steps,
                       upload=args.upload)
    report = train_lora(job, ModelSources.load())
    card = report.card
    print(f"adapter {job.name}: {job.out / LORA_FILE} ({card['weights']} base), {len(report.losses)} steps in "
          f"{report.seconds['train']:.1f} s, final loss {card['final_loss']}, "
          f"{card['dataset']['photos']} photos ({len(report.skipped)} skipped)")
    if card["weights"] == DEV_WEIGHTS:
        print("dev-random base weights: the adapter proves the pipeline, not a style")
    return 0


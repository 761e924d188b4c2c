"""BLIP captioning: photos × conditional prompts, one vision pass, one batched ``generate``.

``BlipForConditionalGeneration.generate`` encodes the image once per sequence and expects every
prompt in a batch to have the same length (it overwrites column 0 with the bos token and drops the
last column). Here the image is encoded once, its embeddings are shared by all prompts, and the
prompts are left-padded as ``[DEC] prompt…`` — exactly the ids BLIP's own ``generate`` builds from
``[CLS] prompt… [SEP]`` — so the text decoder's ``generate`` runs them as one batch. Position ids
follow the attention mask, so each row decodes as it would alone (a unit test checks this against
BLIP's own ``generate``). Decoding is deterministic: greedy or beam search, never sampling.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import BlipForConditionalGeneration, BlipProcessor

from deskgen.common.errors import FatalError
from deskgen.common.models import ModelSources, identify, resolve
from deskgen.services.captioner.onnx_blip import OnnxBlip, int8_weight_type
from deskgen.services.captioner.static_blip import StaticBlip

__all__ = ["Caption", "CaptionResult", "BlipCaptioner", "PRECISIONS", "BACKENDS", "auto_precision", "cpu_isa",
           "CPU_PATHS"]

log = logging.getLogger("deskgen.captioner")

# fp32 everywhere; bf16 on GPUs and CPUs with native bf16 (elsewhere it is emulated and very slow);
# fp16 on GPUs; int8 = dynamic int8 quantisation (per output channel) of every Linear layer, CPU only
# (torch: torch.ao; onnxruntime: its QOperator dynamic quantisation, see onnx_blip).
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
BACKENDS = ("auto", "torch", "onnxruntime", "torch_compile")

# The CPU path ``auto`` takes for each ISA (``cpu_isa``): the fastest whose teacher-forced next tokens agree with
# fp32 torch at >= 95 % of the bench's positions (tests/bench/bench_captioner.py, the README's table). On the
# full-size dev weights every int8 path (torch's and ONNX Runtime's) misses that bar, torch bf16 and torch_compile
# fp32 meet it but are slower than ONNX Runtime fp32 (token for token torch's), the default everywhere; revisit
# with real weights.
CPU_PATHS = {isa: ("onnxruntime", "fp32") for isa in ("amx", "avx512_bf16", "avx512_vnni", "avx512", "avx2",
                                                      "baseline")}

# torch: image embeddings; onnxruntime (numpy) and torch_compile (torch): every decoder layer's image keys, values
ImageState = torch.Tensor | tuple[np.ndarray, np.ndarray] | tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Caption:
    prompt: str
    text: str


@dataclass(frozen=True)
class CaptionResult:
    captions: list[Caption]
    timings: dict[str, float]
    batch_size: int = 1  # photos captioned together


class BlipCaptioner:
    """Loads a BLIP captioning model from a URI and captions one image with fixed prompts.

    Args:
        uri: model URI (``hf://``, ``s3://``, ``file://``, ``pkg://``), see ``deskgen.common.models``.
        prompts: the conditional prompts, run as one batch; ``""`` means unconditional.
        max_new_tokens: upper bound of generated tokens per prompt.
        min_new_tokens: lower bound (benchmarks set it to ``max_new_tokens`` so runs compare).
        num_beams: 1 = greedy; more = beam search. Never sampling.
        precision: one of ``PRECISIONS``; ``auto`` is resolved here (see ``auto_precision``).
        device: ``cpu``, ``cuda`` or ``auto`` (cuda when available).
        backend: ``torch``, ``onnxruntime`` (CPU, greedy; fp32 or int8), ``torch_compile`` (greedy, a static KV
            cache, ``torch.compile``; fp32, bf16 or fp16, see ``static_blip``) or ``auto``: on a CPU with precision
            ``auto``, ``CPU_PATHS[cpu_isa()]``; otherwise torch.
        onnx_cache: folder of the exported ONNX graphs (onnxruntime only).
        threads: onnxruntime's intra-op threads (None: one per core); torch's are set once by the service.
    """

    def __init__(
        self,
        uri: str,
        prompts: list[str] | tuple[str, ...],
        *,
        max_new_tokens: int = 20,
        min_new_tokens: int = 0,
        num_beams: int = 1,
        precision: str = "fp32",
        device: str = "cpu",
        backend: str = "torch",
        onnx_cache: Path | None = None,
        threads: int | None = None,
        sources: ModelSources = ModelSources(),
    ):
        if not prompts:
            raise FatalError("at least one prompt is needed")
        if precision not in PRECISIONS:
            raise FatalError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        if backend not in BACKENDS:
            raise FatalError(f"backend must be one of {BACKENDS}, not {backend!r}")
        if not 0 <= min_new_tokens <= max_new_tokens or max_new_tokens < 1 or num_beams < 1:
            raise FatalError("need 0 <= min_new_tokens <= max_new_tokens, max_new_tokens >= 1, num_beams >= 1")
        self.uri = uri
        self.sources = sources
        self.prompts = tuple(prompts)
        self.max_new_tokens = max_new_tokens
        self.min_new_tokens = min_new_tokens
        self.num_beams = num_beams
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   "cpu" if device == "auto" else device)
        self.isa = cpu_isa() if self.device.type == "cpu" else "cuda"
        if backend == "auto":
            backend, precision = CPU_PATHS[self.isa] if self.device.type == "cpu" and precision == "auto" else \
                ("torch", precision)
        if backend == "onnxruntime":
            precision = "int8" if precision == "auto" else precision
            if self.device.type != "cpu" or precision not in ("fp32", "int8") or num_beams != 1:
                raise FatalError("the onnxruntime backend runs greedy decoding on the CPU, in fp32 or int8")
        if backend == "torch_compile" and (precision == "int8" or num_beams != 1):
            raise FatalError("the torch_compile backend runs greedy decoding in fp32, bf16 or fp16")
        self.backend, self.onnx_cache, self.threads = backend, onnx_cache, threads
        self.precision = precision = auto_precision(self.device) if precision == "auto" else precision
        if precision == "int8" and self.device.type != "cpu":
            raise FatalError("int8 dynamic quantisation runs on the CPU only")
        if precision == "fp16" and self.device.type == "cpu":
            raise FatalError("fp16 is for GPUs; use bf16 or int8 on the CPU")
        self.model: BlipForConditionalGeneration | None = None
        self.processor: BlipProcessor | None = None
        self.weights = "real"
        self.card: dict[str, str] = {}  # name, version, uri: the model's identity in every output
        self.load_ms = 0.0
        self._onnx: OnnxBlip | None = None
        self._static: StaticBlip | None = None
        self._prompt_ids = self._prompt_mask = torch.empty(0, dtype=torch.long)

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def load(self) -> None:
        """Resolve the URI and load model + processor; idempotent. FatalError if unusable."""
        if self.loaded:
            return
        started = time.perf_counter()
        directory = resolve(self.uri, self.sources)
        try:
            self.processor = BlipProcessor.from_pretrained(directory)
            model = BlipForConditionalGeneration.from_pretrained(directory, dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise FatalError(f"cannot load BLIP from {self.uri} ({directory}): {exc}") from None
        identity = identify(self.uri, directory, version=_weights_digest(directory))
        if self.backend == "onnxruntime":
            quantisation = int8_weight_type(self.isa) if self.precision == "int8" else "fp32"
            cache = self.onnx_cache or Path(tempfile.gettempdir()) / "deskgen-captioner-onnx"
            self._onnx = OnnxBlip(model.eval(), cache, identity.version, quantisation, self.threads)
        self.model = self._prepare(model.eval())
        if self.backend == "torch_compile":
            self._static = StaticBlip(self.model)
        self.card, self.weights = identity.as_dict(), identity.weights
        self._prompt_ids, self._prompt_mask = self._encode_prompts()
        self.load_ms = (time.perf_counter() - started) * 1000

    def _prepare(self, model: BlipForConditionalGeneration) -> torch.nn.Module:
        if self.backend == "onnxruntime":
            return model.to("meta")  # the graphs hold the weights: free torch's copy, keep the config
        if self.precision == "int8":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
                from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

                return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig})
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]
        return model.to(device=self.device, dtype=dtype)

    def _encode_prompts(self) -> tuple[torch.Tensor, torch.Tensor]:
        tokenizer = self.processor.tokenizer
        text_config = self.model.config.text_config
        rows = [[text_config.bos_token_id] + tokenizer(p, add_special_tokens=False).input_ids for p in self.prompts]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), text_config.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):  # left padding: every row ends where its new tokens begin
            ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
        return ids.to(self.device), mask.to(self.device)

    @property
    def _dtype(self) -> torch.dtype:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision, torch.float32)

    def pixel_values(self, image: Image.Image) -> torch.Tensor:
        """The image as BLIP's processor prepares it, on the model's device and dtype."""
        pixels = self.processor.image_processor(images=image.convert("RGB"), return_tensors="pt").pixel_values
        return pixels.to(self.device, self._dtype)

    @torch.inference_mode()
    def encode_image(self, pixels: torch.Tensor) -> ImageState:
        """The image side, once per photo: pixels (n, 3, h, w) → torch: BLIP's image embeddings (n, patches + 1,
        width); onnxruntime, torch_compile: every decoder layer's cross-attention keys and values."""
        if self._onnx is not None:
            return self._onnx.encode(pixels.numpy())
        if self._static is not None:
            return self._static.encode(pixels)
        return self.model.vision_model(pixel_values=pixels)[0]

    def _rows(self, photos: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompts' ids and mask for every photo, image-major."""
        return self._prompt_ids.repeat(photos, 1), self._prompt_mask.repeat(photos, 1)

    @torch.inference_mode()
    def generate(self, image: ImageState) -> torch.Tensor:
        """Every prompt of every image in one batched ``generate``: rows are image-major (image 0's prompts,
        then image 1's, …); each image's embeddings are shared by its prompts' rows."""
        config = self.model.config.text_config
        if isinstance(image, tuple):
            ids, mask = self._rows(image[0].shape[1])
            bounds = {"max_new_tokens": self.max_new_tokens, "min_new_tokens": self.min_new_tokens,
                      "eos": config.sep_token_id, "pad": config.pad_token_id}
            if self._static is not None:
                return self._static.generate(image, ids, mask, **bounds)
            return torch.from_numpy(self._onnx.generate(image, ids.numpy(), mask.numpy(), **bounds))
        image_embeds = image
        photos, prompts = image_embeds.shape[0], len(self.prompts)
        image_embeds = (image_embeds.expand(prompts, -1, -1) if photos == 1 else
                        image_embeds.repeat_interleave(prompts, dim=0))
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        ids, mask = self._rows(photos)
        return self.model.text_decoder.generate(
            input_ids=ids,
            attention_mask=mask,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_mask,
            eos_token_id=config.sep_token_id,
            pad_token_id=config.pad_token_id,
            max_new_tokens=self.max_new_tokens,
            min_new_tokens=self.min_new_tokens,
            num_beams=self.num_beams,
            do_sample=False,
        )

    @torch.inference_mode()
    def next_token_logits(self, image: ImageState, sequences: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: the fp32 logits (rows, new tokens, vocab) with which this path predicts each new token
        of ``sequences`` (``generate``'s rows, decoded to full length) from the tokens before it."""
        prompt_ids, prompt_mask = self._rows(sequences.shape[0] // len(self.prompts))
        mask = torch.cat([prompt_mask, torch.ones_like(sequences[:, prompt_ids.shape[1]:])], dim=1)
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        start = prompt_ids.shape[1] - 1
        if self._static is not None:
            return self._static.teacher_forced(sequences, positions, mask, image)[:, start:-1]
        if isinstance(image, tuple):
            logits = self._onnx.forward(sequences.numpy(), positions.numpy(), mask.numpy(),
                                        self._onnx.empty_cache(sequences.shape[0]), image)[0]
            return torch.from_numpy(logits[:, start:-1])
        embeds = image.repeat_interleave(len(self.prompts), dim=0)
        out = self.model.text_decoder(input_ids=sequences, attention_mask=mask, position_ids=positions,
                                      encoder_hidden_states=embeds, return_dict=True)
        return out.logits[:, start:-1].float()

    def caption(self, image: Image.Image) -> CaptionResult:
        """Caption ``image`` with every prompt; texts are decoded as BLIP does (prompt echoed)."""
        return self.caption_many([image])[0]

    def caption_many(self, images: list[Image.Image]) -> list[CaptionResult]:
        """Caption several photos in one vision pass and one batched ``generate`` (photos × prompts rows).

        Each result's timings are the whole batch's (what its job waited for).
        """
        if not self.loaded:
            raise RuntimeError("call load() first")
        if not images:
            return []
        started = time.perf_counter()
        pixels = torch.cat([self.pixel_values(image) for image in images])
        prepared = time.perf_counter()
        image_embeds = self.encode_image(pixels)
        encoded = time.perf_counter()
        sequences = self.generate(image_embeds)
        generated = time.perf_counter()
        texts = self.decode(sequences)
        decoded = time.perf_counter()
        timings = {
            "preprocess_ms": (prepared - started) * 1000,
            "vision_ms": (encoded - prepared) * 1000,
            "generate_ms": (generated - encoded) * 1000,
            "inference_ms": (generated - prepared) * 1000,
            "decode_ms": (decoded - generated) * 1000,
        }
        rows = len(self.prompts)
        return [CaptionResult(captions=[Caption(p, t) for p, t in zip(self.prompts, texts[i * rows:(i + 1) * rows])],
                              timings=dict(timings), batch_size=len(images))
                for i in range(len(images))]

    def decode(self, sequences: torch.Tensor) -> list[str]:
        """Token ids → text, without bos/pad/sep, whatever the tokenizer marks as special."""
        config = self.model.config.text_config
        dropped = {config.bos_token_id, config.pad_token_id, config.sep_token_id}
        rows = [[t for t in row if t not in dropped] for row in sequences.tolist()]
        return [t.strip() for t in self.processor.tokenizer.batch_decode(rows, skip_special_tokens=True)]


def auto_precision(device: torch.device) -> str:
    """fp16 on a GPU; on a CPU bf16 where the CPU computes it natively (AVX-512 BF16 or AMX), else int8."""
    if device.type == "cuda":
        return "fp16"
    return "bf16" if cpu_isa() in ("amx", "avx512_bf16") else "int8"


def cpu_isa() -> str:
    """The best matrix instructions torch will use here: ``amx``, ``avx512_bf16``, ``avx512_vnni``, ``avx512``,
    ``avx2`` or ``baseline``, from the CPU's flags, capped by torch's capability (``ATEN_CPU_CAPABILITY``)."""
    try:
        flags = set(next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").open()
                          if line.startswith("flags")), []))
    except OSError:
        flags = set()
    capability = torch.backends.cpu.get_cpu_capability()
    if not capability.startswith("AVX512"):
        return "avx2" if capability == "AVX2" else "baseline"
    for isa, flag in (("amx", "amx_bf16"), ("avx512_bf16", "avx512_bf16"), ("avx512_vnni", "avx512_vnni")):
        if flag in flags:
            return isa
    return "avx512"


def _weights_digest(directory: Path) -> str:
    """``sha256:<12 hex>`` over the weight files: the version of what actually ran."""
    digest = hashlib.sha256()
    files = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    for path in files:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()[:12]}"

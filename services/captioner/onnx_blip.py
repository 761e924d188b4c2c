"""BLIP on ONNX Runtime: the vision encoder and the text decoder exported as two graphs, decoded greedily with
a KV cache.

- ``vision.onnx``: pixels (n, 3, h, w) → every decoder layer's cross-attention keys and values over the image
  (layers, n, heads, patches, head_dim), so a photo's image side is computed once, whatever its prompts.
- ``step.onnx``: one decoder pass over new tokens given the self-attention cache (layers, rows, heads, past,
  head_dim) and the photos' image keys/values (rows are image-major, each photo's prompts in turn); returns every new position's logits and the grown cache. The
  prompts run through it once (prefill), then one token per step.

Rows are left-padded; position ids and the key mask follow the attention mask exactly as in BLIP's own
``generate``. ``int8`` is ONNX Runtime's dynamic quantisation (QOperator: weights int8 per channel, activations
quantised at run time): weights ``QUInt8`` where the CPU has no VNNI (AVX2's u8×s8 multiply can saturate; u8×u8
does not), ``QInt8`` where it has. Exported files are cached under ``cache_dir`` keyed by the weights' digest,
the graph version and the quantisation, written atomically so concurrent starts do not see half a file.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime
import torch
from torch import nn

from deskgen.common.errors import FatalError

__all__ = ["OnnxBlip", "GRAPH_VERSION", "int8_weight_type", "greedy"]

log = logging.getLogger("deskgen.captioner")

GRAPH_VERSION = "2"  # bump when the exported graphs change


def int8_weight_type(isa: str) -> str:
    """``QInt8`` weights where VNNI multiplies u8×s8 exactly, else ``QUInt8`` (u8×s8 on plain AVX2/AVX-512 can
    saturate; u8×u8 does not)."""
    return "QInt8" if isa in ("amx", "avx512_bf16", "avx512_vnni") else "QUInt8"


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(rows, tokens, width) → (rows, heads, tokens, head_dim)."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _attend(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Scaled dot-product attention, (rows, heads, tokens, head_dim) → (rows, tokens, width)."""
    scores = query @ keys.transpose(-1, -2) / query.shape[-1] ** 0.5
    if bias is not None:
        scores = scores + bias
    return (scores.softmax(-1) @ values).transpose(1, 2).flatten(2)


def _attend_image(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Cross-attention of image-major rows (photo 0's prompts, photo 1's, …) to their photo's keys and values
    (photos, heads, patches, head_dim), broadcast over the prompts instead of copied per row."""
    by_photo = query.unflatten(0, (keys.shape[0], -1))
    scores = by_photo @ keys.unsqueeze(1).transpose(-1, -2) / query.shape[-1] ** 0.5
    return (scores.softmax(-1) @ values.unsqueeze(1)).flatten(0, 1).transpose(1, 2).flatten(2)


class _VisionGraph(nn.Module):
    def __init__(self, blip: nn.Module):
        super().__init__()
        self.vision = blip.vision_model
        self.cross = nn.ModuleList(layer.crossattention.self for layer in blip.text_decoder.bert.encoder.layer)
        self.heads = blip.config.text_config.num_attention_heads

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embeds = self.vision(pixel_values=pixel_values)[0]
        keys = torch.stack([_heads(attention.key(embeds), self.heads) for attention in self.cross])
        values = torch.stack([_heads(attention.value(embeds), self.heads) for attention in self.cross])
        return keys, values


class _StepGraph(nn.Module):
    def __init__(self, blip: nn.Module):
        super().__init__()
        self.decoder = blip.text_decoder
        self.heads = blip.config.text_config.num_attention_heads

    def forward(self, input_ids, position_ids, key_mask, past_keys, past_values, cross_keys, cross_values):
        hidden = self.decoder.bert.embeddings(input_ids=input_ids, position_ids=position_ids)
        new, total = input_ids.shape[1], key_mask.shape[1]
        query_at = torch.arange(new, device=input_ids.device) + (total - new)
        causal = torch.arange(total, device=input_ids.device)[None, :] <= query_at[:, None]
        visible = causal[None, None] & key_mask[:, None, None, :].bool()
        bias = torch.where(visible, 0.0, torch.finfo(hidden.dtype).min)
        keys_out, values_out = [], []
        for i, layer in enumerate(self.decoder.bert.encoder.layer):
            own = layer.attention.self
            keys = torch.cat([past_keys[i], _heads(own.key(hidden), self.heads)], dim=2)
            values = torch.cat([past_values[i], _heads(own.value(hidden), self.heads)], dim=2)
            keys_out.append(keys)
            values_out.append(values)
            attended = layer.attention.output(_attend(_heads(own.query(hidden), self.heads), keys, values, bias), hidden)
            cross = layer.crossattention
            query = _heads(cross.self.query(attended), self.heads)
            attended = cross.output(_attend_image(query, cross_keys[i], cross_values[i]), attended)
            hidden = layer.output(layer.intermediate(attended), attended)
        return self.decoder.cls(hidden), torch.stack(keys_out), torch.stack(values_out)


class OnnxBlip:
    """BLIP's two graphs on ONNX Runtime (CPU), exported from a loaded fp32 model on first use of a cache key.

    Args:
        blip: the fp32 ``BlipForConditionalGeneration`` (only read while exporting).
        cache_dir: folder of exported graphs; a subfolder per ``key``.
        key: the weights' identity (their digest), part of the cache key.
        quantisation: ``fp32``, ``QUInt8`` or ``QInt8`` (dynamic int8 with those weights).
        threads: intra-op threads (None: one per core).
    """

    def __init__(self, blip: nn.Module, cache_dir: Path, key: str, quantisation: str = "fp32",
                 threads: int | None = None):
        if quantisation not in ("fp32", "QUInt8", "QInt8"):
            raise FatalError(f"ONNX quantisation must be fp32, QUInt8 or QInt8, not {quantisation!r}")
        config = blip.config.text_config
        self.layers, self.heads = config.num_hidden_layers, config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.folder = cache_dir / f"blip-{key.replace(':', '-')}-g{GRAPH_VERSION}-{quantisation.lower()}"
        self.export_s = 0.0
        if not (self.folder / "step.onnx").is_file():
            started = time.perf_counter()
            self._export(blip, quantisation)
            self.export_s = time.perf_counter() - started
            log.info("captioner: exported BLIP to ONNX (%s) in %.0f s: %s", quantisation, self.export_s, self.folder)
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        self._vision = onnxruntime.InferenceSession(str(self.folder / "vision.onnx"), options, providers=providers)
        self._step = onnxruntime.InferenceSession(str(self.folder / "step.onnx"), options, providers=providers)

    # -- export --------------------------------------------------------------------------------

    def _export(self, blip: nn.Module, quantisation: str) -> None:
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.folder.parent, prefix=".export-") as scratch:
            work = Path(scratch)
            size = blip.config.vision_config.image_size
            pixels = torch.zeros(1, 3, size, size)
            with torch.inference_mode():
                cross_keys, cross_values = _VisionGraph(blip)(pixels)
            self._onnx(_VisionGraph(blip), (pixels,), work / "vision.onnx", ["pixel_values"],
                       ["cross_keys", "cross_values"], {"pixel_values": {0: "photos"}, "cross_keys": {1: "photos"},
                                                        "cross_values": {1: "photos"}})
            rows, new, past = 2, 3, 2
            past_cache = torch.zeros(self.layers, rows, self.heads, past, self.head_dim)
            example = (torch.ones(rows, new, dtype=torch.long), torch.arange(new).repeat(rows, 1),
                       torch.ones(rows, past + new, dtype=torch.long), past_cache, past_cache,
                       cross_keys, cross_values)
            cache_axes = {1: "rows", 3: "past"}
            self._onnx(_StepGraph(blip), example, work / "step.onnx",
                       ["input_ids", "position_ids", "key_mask", "past_keys", "past_values", "cross_keys",
                        "cross_values"], ["logits", "keys", "values"],
                       {"input_ids": {0: "rows", 1: "new"}, "position_ids": {0: "rows", 1: "new"},
                        "key_mask": {0: "rows", 1: "total"}, "past_keys": cache_axes, "past_values": cache_axes,
                        "cross_keys": {1: "photos"}, "cross_values": {1: "photos"}, "logits": {0: "rows", 1: "new"},
                        "keys": {1: "rows", 3: "total"}, "values": {1: "rows", 3: "total"}})
            if quantisation != "fp32":
                from onnxruntime.quantization import QuantType, quantize_dynamic

                for name in ("vision.onnx", "step.onnx"):
                    quantize_dynamic(work / name, work / f"q-{name}", per_channel=True,
                                     weight_type=getattr(QuantType, quantisation))
                    os.replace(work / f"q-{name}", work / name)
            try:
                os.replace(work, self.folder)  # atomic: another process's finished export wins
            except OSError:
                if not (self.folder / "step.onnx").is_file():
                    raise

    @staticmethod
    def _onnx(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], axes: dict) -> None:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # tracer warnings about Python ints taken from shapes
            torch.onnx.export(module.eval(), args, str(path), input_names=inputs, output_names=outputs,
                              dynamic_axes=axes, opset_version=17, dynamo=False)

    # -- running -------------------------------------------------------------------------------

    def encode(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (n, 3, h, w) float32 → the image keys and values of every decoder layer."""
        keys, values = self._vision.run(None, {"pixel_values": pixels})
        return keys, values

    def forward(self, ids: np.ndarray, positions: np.ndarray, key_mask: np.ndarray, past: tuple[np.ndarray, np.ndarray],
                cross: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Logits of every new position and the grown self-attention cache."""
        logits, keys, values = self._step.run(None, {
            "input_ids": ids, "position_ids": positions, "key_mask": key_mask, "past_keys": past[0],
            "past_values": past[1], "cross_keys": cross[0], "cross_values": cross[1]})
        return logits, keys, values

    def empty_cache(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        empty = np.zeros((self.layers, rows, self.heads, 0, self.head_dim), np.float32)
        return empty, empty

    def generate(self, cross: tuple[np.ndarray, np.ndarray], ids: np.ndarray, mask: np.ndarray, *,
                 max_new_tokens: int, min_new_tokens: int, eos: int, pad: int) -> np.ndarray:
        """Greedy decoding (``greedy``) of left-padded image-major rows against their photos' keys/values; the
        self-attention cache grows by each step's tokens."""
        key_mask, cache = mask, self.empty_cache(ids.shape[0])

        def step(new_ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
            nonlocal key_mask, cache
            if cache[0].shape[3]:  # after the prefill: one more visible key per row
                key_mask = np.concatenate([key_mask, np.ones((ids.shape[0], 1), mask.dtype)], axis=1)
            logits, keys, values = self.forward(new_ids, positions, key_mask, cache, cross)
            cache = keys, values
            return logits

        return greedy(step, ids, mask, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, eos=eos, pad=pad)


def greedy(step: Callable[[np.ndarray, np.ndarray], np.ndarray], ids: np.ndarray, mask: np.ndarray, *,
           max_new_tokens: int, min_new_tokens: int, eos: int, pad: int) -> np.ndarray:
    """Greedy decoding of left-padded rows ``ids``/``mask``, like BLIP's ``generate``: the prompt ids followed by
    the new tokens (``pad`` after a row's ``eos``). ``step(new_ids, position_ids)`` runs the decoder over the new
    tokens after those it has seen (its cache) and returns their logits (rows, new, vocab); position ids follow
    the attention mask."""
    rows = ids.shape[0]
    positions = np.maximum(mask.cumsum(1) - 1, 0)
    logits = step(ids, positions)
    sequences, done = ids, np.zeros(rows, bool)
    for generated in range(max_new_tokens):
        scores = logits[:, -1]
        if generated < min_new_tokens:
            scores[:, eos] = -np.inf
        token = np.where(done, pad, scores.argmax(-1))
        sequences = np.concatenate([sequences, token[:, None]], axis=1)
        done |= token == eos
        if done.all() or generated == max_new_tokens - 1:
            break
        positions = positions[:, -1:] + 1
        logits = step(token[:, None], positions)
    return sequences

"""BLIP on torch with a static KV cache, compiled by ``torch.compile``: the ``torch_compile`` backend.

transformers 5.23 cannot run BLIP's text decoder with its own static cache: ``BlipTextModel`` wraps only a
``DynamicCache`` in an ``EncoderDecoderCache``, so under ``generate(cache_implementation="static")`` every
layer's cross-attention writes the image's keys into that layer's self-attention ``StaticCache`` and decoding
stops with an out-of-bounds ``index_copy_``. So this module decodes with BLIP's own layers, as the ONNX graphs do
(``onnx_blip``), and a cache of fixed shape:

- the image side once per photo: the vision encoder and every decoder layer's cross-attention keys and values;
- the self-attention keys and values preallocated as (layers, rows, heads, prompt + max_new_tokens, head_dim),
  written in place at each step's slots. The key mask covers the whole length from the start (prompt padding 0,
  every new token 1) and the causal mask hides the slots not written yet, so every decode step has the same
  shapes and ``torch.compile`` builds one graph for it, one for the prompts' prefill (per batch size).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from deskgen.services.captioner.onnx_blip import _attend, _attend_image, _heads, _VisionGraph, greedy

__all__ = ["StaticBlip"]


class _StaticStep(nn.Module):
    """One decoder pass over new tokens written at cache slots ``write_at`` onwards; returns their logits."""

    def __init__(self, blip: nn.Module):
        super().__init__()
        self.decoder = blip.text_decoder
        self.heads = blip.config.text_config.num_attention_heads

    def forward(self, input_ids, position_ids, key_mask, write_at, cache_keys, cache_values, cross_keys, cross_values):
        hidden = self.decoder.bert.embeddings(input_ids=input_ids, position_ids=position_ids)
        slots = torch.arange(input_ids.shape[1], device=input_ids.device) + write_at
        causal = torch.arange(key_mask.shape[1], device=input_ids.device)[None, :] <= slots[:, None]
        visible = causal[None, None] & key_mask[:, None, None, :].bool()
        bias = torch.where(visible, 0.0, torch.finfo(hidden.dtype).min).to(hidden.dtype)
        for i, layer in enumerate(self.decoder.bert.encoder.layer):
            own = layer.attention.self
            cache_keys[i].index_copy_(2, slots, _heads(own.key(hidden), self.heads))
            cache_values[i].index_copy_(2, slots, _heads(own.value(hidden), self.heads))
            query = _heads(own.query(hidden), self.heads)
            attended = layer.attention.output(_attend(query, cache_keys[i], cache_values[i], bias), hidden)
            cross = layer.crossattention
            query = _heads(cross.self.query(attended), self.heads)
            attended = cross.output(_attend_image(query, cross_keys[i], cross_values[i]), attended)
            hidden = layer.output(layer.intermediate(attended), attended)
        return self.decoder.cls(hidden)


class StaticBlip:
    """BLIP's vision side and a static-cache text decoder, both compiled (``compiled=False``: eager, for tests).

    Args:
        blip: the loaded ``BlipForConditionalGeneration`` in the dtype to run (its modules are shared, not copied).
        compiled: wrap both in ``torch.compile`` (inductor; one graph per input shape, built on first use).
    """

    def __init__(self, blip: nn.Module, compiled: bool = True):
        config = blip.config.text_config
        self.layers, self.heads = config.num_hidden_layers, config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dtype = next(blip.parameters()).dtype
        vision, step = _VisionGraph(blip).eval(), _StaticStep(blip).eval()
        self._vision = torch.compile(vision, dynamic=False) if compiled else vision
        self._step = torch.compile(step, dynamic=False) if compiled else step

    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels (n, 3, h, w) → the image keys and values of every decoder layer (layers, n, heads, patches, dim)."""
        return self._vision(pixels)

    def _cache(self, rows: int, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.layers, rows, self.heads, length, self.head_dim)
        return torch.zeros(shape, dtype=self.dtype, device=device), torch.zeros(shape, dtype=self.dtype, device=device)

    def teacher_forced(self, sequences: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
                       cross: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The fp32 logits of every position of ``sequences`` in one pass through an empty cache of their length."""
        keys, values = self._cache(*sequences.shape, sequences.device)
        start = torch.tensor(0, device=sequences.device)
        return self._step(sequences, positions, mask, start, keys, values, *cross).float()

    def generate(self, cross: tuple[torch.Tensor, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor, *,
                 max_new_tokens: int, min_new_tokens: int, eos: int, pad: int) -> torch.Tensor:
        """Greedy decoding of left-padded image-major rows, as ``OnnxBlip.generate`` (the same loop)."""
        rows, width = ids.shape
        keys, values = self._cache(rows, width + max_new_tokens, ids.device)
        key_mask = torch.cat([mask, mask.new_ones(rows, max_new_tokens)], dim=1)
        written = 0

        def step(new_ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
            nonlocal written
            write_at = torch.tensor(written, device=ids.device)
            logits = self._step(torch.from_numpy(new_ids).to(ids.device), torch.from_numpy(positions).to(ids.device),
                                key_mask, write_at, keys, values, *cross)
            written += new_ids.shape[1]
            return logits[:, -1:].float().cpu().numpy()

        return torch.from_numpy(greedy(step, ids.cpu().numpy(), mask.cpu().numpy(), max_new_tokens=max_new_tokens,
                                       min_new_tokens=min_new_tokens, eos=eos, pad=pad)).to(ids.device)

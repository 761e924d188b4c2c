"""``deskgen train classifier``: fine-tune the 2-class desk head on a folder of labelled photos.

The data folder holds ``desk/`` and ``not_desk/`` (torchvision ImageFolder layout). The backbone
stays frozen (BatchNorm statistics included), so each photo is embedded once (plus its mirror
image, as augmentation) and only the head trains: seconds on a CPU for EfficientNet-Lite0.
A stratified share of the photos is held out; the command prints held-out accuracy and the
confusion matrix and writes a servable checkpoint folder (config.json + model.safetensors).

- ``efficientnet_lite0`` starts from the packaged ImageNet weights (or ``--init``) and keeps its
  ImageNet classifier beside the new head, so served events still carry ImageNet evidence.
- ``vgg16`` trains torchvision's three-layer classifier. No ImageNet VGG16 weights can be had
  offline: pass ``--init`` (any VGG16 checkpoint or state dict) or ``--from-scratch`` (random
  convolutions: only for testing the pipeline).
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from torch import nn

from deskgen.common.errors import DeskgenError, FatalError, InvalidInputError
from deskgen.common.imaging import decode_image
from deskgen.common.settings import ImageSettings
from deskgen.common.models import ModelSources, resolve

from deskgen.services.classifier.checkpoint import ModelSpec, build_network, load_checkpoint, save_checkpoint
from deskgen.services.classifier.networks import ARCHS, DeskEfficientNet, preprocessing_for
from deskgen.services.classifier.settings import DEFAULT_MODEL_URI

__all__ = ["CLASSES", "TrainReport", "train", "cli"]

# Training photos are local files of the operator's: the decoder's default limits.
_LIMITS = ImageSettings()

CLASSES = ("desk", "not_desk")
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


@dataclass
class TrainReport:
    """What a training run did: per-epoch mean loss, held-out results, the checkpoint folder."""

    out: Path
    losses: list[float] = field(default_factory=list)
    holdout_accuracy: float | None = None
    # confusion[true][predicted], indices in CLASSES order.
    confusion: list[list[int]] = field(default_factory=lambda: [[0, 0], [0, 0]])


def train(data: Path, out: Path, *, arch: str = "efficientnet_lite0", epochs: int = 20, init: str | None = None,
          from_scratch: bool = False, holdout: float = 0.2, lr: float = 1e-3, batch_size: int = 16,
          threshold: float = 0.5, seed: int = 0, log: Callable[[str], None] = print) -> TrainReport:
    """Fine-tune the desk head on ``data`` and write the checkpoint to ``out``.

    Raises:
        FatalError: a bad data folder, a missing or unfit starting checkpoint.
    """
    if arch not in ARCHS:
        raise FatalError(f"unknown architecture {arch!r}; expected one of {ARCHS}")
    torch.manual_seed(seed)
    train_set, held_out = _split(_collect(data), holdout, random.Random(seed))
    log(f"data: {len(train_set)} training and {len(held_out)} held-out photos from {data}")
    spec, network = _starting_network(arch, init, from_scratch)
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    for parameter in network.head.parameters():
        parameter.requires_grad_(True)

    features, labels = _embed(network, spec.arch, train_set, batch_size, mirrored=True, log=log)
    report = TrainReport(out=out)
    optimizer = torch.optim.AdamW(network.head.parameters(), lr=lr, weight_decay=1e-4)
    counts = torch.bincount(labels, minlength=2).clamp(min=1).float()
    loss_fn = nn.CrossEntropyLoss(weight=counts.sum() / (2 * counts))  # balance the two classes
    network.head.train()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(labels))
        total, correct = 0.0, 0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            logits = network.head(features[batch])
            loss = loss_fn(logits, labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            correct += int((logits.argmax(1) == labels[batch]).sum())
        report.losses.append(total / len(labels))
        log(f"epoch {epoch}/{epochs}: loss {report.losses[-1]:.4f}, training accuracy {correct / len(labels):.3f}")
    network.eval()

    if held_out:
        held_features, held_labels = _embed(network, spec.arch, held_out, batch_size, mirrored=False, log=log)
        with torch.no_grad():
            desk_prob = network.head(held_features).softmax(1)[:, CLASSES.index("desk")]
        predicted = torch.where(desk_prob >= threshold, CLASSES.index("desk"), CLASSES.index("not_desk"))
        for truth, guess in zip(held_labels.tolist(), predicted.tolist()):
            report.confusion[truth][guess] += 1
        report.holdout_accuracy = float((predicted == held_labels).float().mean())
        log(_confusion_table(report))
    else:
        log("no held-out photos (too few per class): accuracy not measured")

    trained = replace(
        spec, name=f"{spec.arch}-desk-finetuned", classes=CLASSES, threshold=threshold,
        version=datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"),
        training={"data": str(data), "train_photos": len(train_set), "held_out_photos": len(held_out),
                  "epochs": epochs, "lr": lr, "final_loss": report.losses[-1] if report.losses else None,
                  "holdout_accuracy": report.holdout_accuracy, "confusion": report.confusion,
                  "from_scratch": from_scratch},
    )
    save_checkpoint(out, network, trained)
    log(f"checkpoint written to {out}; serve it with DESKGEN_CLASSIFIER_MODEL=file://{out.resolve()}")
    return report


def cli(argv: list[str]) -> int:
    """``deskgen train classifier --data DIR [--arch ...] [--epochs N] [--out DIR] ...``"""
    parser = argparse.ArgumentParser(prog="deskgen train classifier", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with desk/ and not_desk/ photos")
    parser.add_argument("--arch", choices=ARCHS, default="efficientnet_lite0")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", type=Path, help="checkpoint folder (default .cache/trained/classifier-<arch>)")
    parser.add_argument("--init", help="model URI to start from (efficientnet_lite0 default: the packaged "
                                       "ImageNet weights; vgg16: required unless --from-scratch)")
    parser.add_argument("--from-scratch", action="store_true", help="vgg16 only: random weights, for testing")
    parser.add_argument("--holdout", type=float, default=0.2, help="share of each class held out (default 0.2)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threshold", type=float, default=0.5, help="desk decision threshold stored in the checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="CPU threads (default: one per core)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or Path(".cache") / "trained" / f"classifier-{args.arch}"
    started = time.perf_counter()
    try:
        train(args.data, out, arch=args.arch, epochs=args.epochs, init=args.init, from_scratch=args.from_scratch,
              holdout=args.holdout, lr=args.lr, batch_size=args.batch_size, threshold=args.threshold, seed=args.seed)
    except DeskgenError as exc:
        print(f"deskgen train classifier: {exc}")
        return 2
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


def _collect(data: Path) -> list[tuple[Path, int]]:
    if not data.is_dir():
        raise FatalError(f"training data folder {data} does not exist")
    folders = sorted(p.name for p in data.iterdir() if p.is_dir())
    if folders != sorted(CLASSES):
        raise FatalError(f"{data} must hold exactly the folders {list(CLASSES)}, found {folders}")
    samples = []
    for label, name in enumerate(CLASSES):
        photos = sorted(p for p in (data / name).rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
        if len(photos) < 2:
            raise FatalError(f"{data / name} needs at least 2 photos, has {len(photos)}")
        samples += [(photo, label) for photo in photos]
    return samples


def _split(samples: list[tuple[Path, int]], holdout: float, rng: random.Random):
    """Stratified split; every class keeps at least one training photo."""
    if not 0 <= holdout < 1:
        raise FatalError(f"--holdout must be in [0, 1), not {holdout}")
    train_set, held_out = [], []
    for label in range(len(CLASSES)):
        members = [s for s in samples if s[1] == label]
        rng.shuffle(members)
        cut = min(round(len(members) * holdout), len(members) - 1)
        held_out += members[:cut]
        train_set += members[cut:]
    return train_set, held_out


def _starting_network(arch: str, init: str | None, from_scratch: bool) -> tuple[ModelSpec, nn.Module]:
    """The network to fine-tune, with a fresh or inherited 2-class head."""
    if arch == "efficientnet_lite0":
        if from_scratch:
            raise FatalError("--from-scratch is for vgg16; efficientnet_lite0 starts from its packaged ImageNet weights")
        base_uri = init or DEFAULT_MODEL_URI
        spec, base = load_checkpoint(resolve(base_uri, ModelSources.load()), arch=arch, expected_arch=arch)
        network = DeskEfficientNet(head_classes=2)
        missing = network.load_state_dict(base.state_dict(), strict=False).missing_keys
        if set(missing) - {"head.weight", "head.bias"}:
            raise FatalError(f"{base_uri}: not an EfficientNet-Lite0 checkpoint (missing {missing[:5]})")
        return replace(spec, base=base_uri), network
    if from_scratch:
        spec = ModelSpec(arch=arch, name="vgg16", version="random", imagenet=False, classes=CLASSES,
                         base="random-init")
        return spec, build_network(spec)
    if not init:
        raise FatalError("no ImageNet VGG16 weights are available offline: pass --init URI (a VGG16 "
                         "checkpoint or state dict to fine-tune) or --from-scratch (random, for testing)")
    spec, network = load_checkpoint(resolve(init, ModelSources.load()), arch=arch, expected_arch=arch)
    if spec.imagenet:  # ImageNet VGG16 weights: swap the 1000-way layer for a 2-way one
        network.classifier[-1] = nn.Linear(network.classifier[-1].in_features, len(CLASSES))
    return replace(spec, imagenet=False, base=init), network


def _embed(network: nn.Module, arch: str, samples: list[tuple[Path, int]], batch_size: int, *,
           mirrored: bool, log: Callable[[str], None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone features of every photo (and of its mirror image when ``mirrored``)."""
    preprocess = preprocessing_for(arch)
    network.eval()
    features, labels = [], []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        images = [_read(path) for path, _ in chunk]
        if mirrored:
            images += [image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for image in images]
        with torch.no_grad():
            features.append(network.embed(preprocess(images)))
        labels += [label for _, label in chunk] * (2 if mirrored else 1)
        log(f"embedded {min(start + batch_size, len(samples))}/{len(samples)} photos")
    return torch.cat(features), torch.tensor(labels)


def _read(path: Path) -> Image.Image:
    try:
        return decode_image(path.read_bytes(), _LIMITS)
    except InvalidInputError as exc:
        raise FatalError(f"training photo {path}: {exc}") from None


def _confusion_table(report: TrainReport) -> str:
    rows = [f"| {name} | {row[0]} | {row[1]} |" for name, row in zip(CLASSES, report.confusion)]
    return "\n".join([f"held-out accuracy {report.holdout_accuracy:.3f}",
                      "| true \\ predicted | desk | not_desk |", "|---|---|---|", *rows])

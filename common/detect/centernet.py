"""CenterNet-MobileNetV3 trained on COCO (the TF.js model inside ``@vladmandic/human``), converted to ONNX at
set-up (``tfjs.py``) and run with ONNX Runtime.

Input: RGB stretched to 512², values 0–255 (the size is baked into the graph). Outputs: a sigmoid heatmap
[1, 128, 128, 80] and, per cell, the distances (left, top, right, bottom) to the box's sides in input pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
# Imported with this package, so a process that also loads the catalogue (usearch) imports onnxruntime first: the
# other order segfaults onnxruntime's import (usearch 2.26.6, onnxruntime 1.31.1).
import onnxruntime
from PIL import Image

from .boxes import RawDetection

__all__ = ["CenterNetCoco", "decode_centernet", "COCO_LABELS"]

_SIZE, _STRIDE, _TOP = 512, 4, 100

COCO_LABELS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush")


def decode_centernet(heatmap: np.ndarray, sides: np.ndarray, min_score: float) -> list[RawDetection]:
    """The heatmap's local maxima (3×3) reaching ``min_score``, at most 100, as boxes in [0, 1]."""
    height, width, _ = heatmap.shape
    padded = np.pad(heatmap, ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    pooled = np.max([padded[dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3)], axis=0)
    peaks = np.where((heatmap == pooled) & (heatmap >= min_score), heatmap, 0.0).reshape(-1)
    best = np.argsort(-peaks, kind="stable")[:_TOP]
    found = []
    for index in best[peaks[best] > 0]:
        y, x, c = np.unravel_index(index, heatmap.shape)
        left, top, right, bottom = sides[y, x]
        box = np.clip([_STRIDE * x - left, _STRIDE * y - top, _STRIDE * x + right, _STRIDE * y + bottom],
                      0, _SIZE) / _SIZE
        found.append(RawDetection(COCO_LABELS[c], float(heatmap[y, x, c]), tuple(float(v) for v in box)))
    return found


class CenterNetCoco:
    """The detector; ``folder`` holds ``centernet-coco.onnx``."""

    name = "centernet-coco"
    files = ("centernet-coco.onnx",)
    categories = {"tv": "monitor", "laptop": "laptop", "mouse": "mouse", "keyboard": "keyboard", "chair": "chair",
                  "potted plant": "plant"}

    def __init__(self, folder: Path, threads: int = 1):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self._session = onnxruntime.InferenceSession(str(folder / self.files[0]), options,
                                                     providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def __call__(self, image: Image.Image, min_score: float) -> list[RawDetection]:
        pixels = np.asarray(image.convert("RGB").resize((_SIZE, _SIZE), Image.Resampling.BILINEAR), np.float32)
        heatmap, sides = self._session.run(["tower_0/keypoints", "tower_0/wh"], {self._input: pixels[None]})
        return decode_centernet(heatmap[0], sides[0], min_score)

"""SSD-MobileNetV2 trained on Open Images v4 (the model inside ``@mediapipe/objectron``), run with LiteRT.

Input: RGB stretched to 300², scaled to [-1, 1]. Outputs are raw: box encodings [1, 1917, 4] as
(y, x, h, w) offsets from fixed anchors and class logits [1, 1917, 24] (index 0 = background).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .boxes import RawDetection

__all__ = ["SsdOpenImages", "ssd_anchors", "decode_ssd"]

_SIZE = 300
_STRIDES = (16, 32, 64, 128, 256, 512)
_ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 1 / 3)
_MIN_SCALE, _MAX_SCALE = 0.2, 0.95
_CENTRE_SCALE, _SIZE_SCALE = 10.0, 5.0


def ssd_anchors() -> np.ndarray:
    """The 1917 anchors (cy, cx, h, w), normalised, in the model's output order (row, column, anchor): the
    TF Object Detection API's SSD generator with 6 layers, the lowest reduced to three anchors, the others
    with an extra anchor at the scale between theirs and the next layer's."""
    scales = [_MIN_SCALE + (_MAX_SCALE - _MIN_SCALE) * i / (len(_STRIDES) - 1) for i in range(len(_STRIDES))] + [1.0]
    anchors = []
    for layer, stride in enumerate(_STRIDES):
        scale = scales[layer]
        if layer == 0:
            specs = [(0.1, 1.0), (scale, 2.0), (scale, 0.5)]
        else:
            specs = [(scale, ratio) for ratio in _ASPECT_RATIOS] + [(float(np.sqrt(scale * scales[layer + 1])), 1.0)]
        cells = -(-_SIZE // stride)
        for row in range(cells):
            for column in range(cells):
                for size, ratio in specs:
                    anchors.append(((row + 0.5) / cells, (column + 0.5) / cells,
                                    size / np.sqrt(ratio), size * np.sqrt(ratio)))
    return np.asarray(anchors, np.float32)


def decode_ssd(encodings: np.ndarray, logits: np.ndarray, anchors: np.ndarray, labels: list[str],
               min_score: float) -> list[RawDetection]:
    """Every (anchor, class) whose sigmoid score reaches ``min_score``, as a box in [0, 1] (x0, y0, x1, y1)."""
    scores = 1 / (1 + np.exp(-logits[:, 1:]))
    anchor_ids, class_ids = np.nonzero(scores >= min_score)
    found = []
    for a, c in zip(anchor_ids, class_ids):
        ty, tx, th, tw = encodings[a]
        acy, acx, ah, aw = anchors[a]
        cy, cx = ty / _CENTRE_SCALE * ah + acy, tx / _CENTRE_SCALE * aw + acx
        h, w = np.exp(th / _SIZE_SCALE) * ah, np.exp(tw / _SIZE_SCALE) * aw
        box = np.clip([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 0.0, 1.0)
        found.append(RawDetection(labels[c + 1], float(scores[a, c]), tuple(float(v) for v in box)))
    return found


class SsdOpenImages:
    """The detector; ``path`` is the folder holding ``ssd-oidv4.tflite`` and ``ssd-oidv4.labels``."""

    name = "ssd-oidv4"
    files = ("ssd-oidv4.tflite", "ssd-oidv4.labels")
    categories = {"Computer monitor": "monitor", "Laptop": "laptop", "Computer mouse": "mouse", "Chair": "chair",
                  "Desk": "desk", "Table": "desk"}

    def __init__(self, folder: Path, threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.labels = (folder / self.files[1]).read_text().splitlines()
        self._interpreter = Interpreter(model_path=str(folder / self.files[0]), num_threads=threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        outputs = {o["name"]: o["index"] for o in self._interpreter.get_output_details()}
        self._boxes, self._classes = outputs["raw_outputs/box_encodings"], outputs["raw_outputs/class_predictions"]
        self._anchors = ssd_anchors()

    def __call__(self, image: Image.Image, min_score: float) -> list[RawDetection]:
        pixels = np.asarray(image.convert("RGB").resize((_SIZE, _SIZE), Image.Resampling.BILINEAR), np.float32)
        self._interpreter.set_tensor(self._input, (pixels / 127.5 - 1.0)[None])
        self._interpreter.invoke()
        return decode_ssd(self._interpreter.get_tensor(self._boxes)[0], self._interpreter.get_tensor(self._classes)[0],
                          self._anchors, self.labels, min_score)

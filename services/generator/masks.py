"""Masks of the user's own devices for ``keep_devices``, and the paste-back that keeps them exact.

A keep mask is an ``L`` image the size of the output: 255 where the user's pixels stay, 0 where SDXL
paints. Device boxes are normalised ``(x0, y0, x1, y1)`` in 0..1, so they hold for any size.
With SAM (transformers' ``SamModel``, one box prompt per device) each device keeps its segment, clipped
to its grown box; without SAM, or where SAM finds nothing inside a box, the grown box itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from deskgen.common.models import ModelCard, ModelSources
from deskgen.services.generator.components import Placement, load_sam

__all__ = ["Box", "box_mask", "paste_back", "DeviceMasker"]

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in 0..1


def box_mask(size: tuple[int, int], boxes: Sequence[Box], grow: float) -> Image.Image:
    """A keep mask of ``boxes``, each grown by ``grow`` × the longer side on every side (clipped to the image)."""
    width, height = size
    margin = grow * max(width, height)
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    for x0, y0, x1, y1 in boxes:
        left, top = max(0, math.floor(x0 * width - margin)), max(0, math.floor(y0 * height - margin))
        right, bottom = min(width, math.ceil(x1 * width + margin)), min(height, math.ceil(y1 * height + margin))
        if right > left and bottom > top:
            draw.rectangle((left, top, right - 1, bottom - 1), fill=255)
    return mask


def paste_back(original: Image.Image, generated: Image.Image, keep: Image.Image, feather_px: int) -> Image.Image:
    """``generated`` with ``original``'s pixels wherever ``keep`` is 255 — exactly, not blended — fading
    into the generated pixels over about ``feather_px`` pixels outside the kept regions."""
    alpha = keep
    if feather_px:
        # A blur halves the mask at its edge; doubling it puts the whole soft ramp outside the region,
        # and the maximum with the hard mask keeps every pixel inside at 255.
        soft = keep.filter(ImageFilter.GaussianBlur(feather_px / 2)).point(lambda v: min(255, 2 * v))
        alpha = ImageChops.lighter(soft, keep)
    return Image.composite(original.convert("RGB"), generated.convert("RGB"), alpha)


class DeviceMasker:
    """Turns device boxes into a keep mask, refined by SAM when ``sam_uri`` is set.

    Args:
        sam_uri: a transformers SAM folder (model and processor) by URI; empty: boxes only.
        grow: see ``box_mask``; SAM segments are clipped to their box grown the same way.
        placement: the device and dtype of SAM (default: cuda/float16 when available).
        sources: where ``hf://``/``s3://`` URIs resolve.
    """

    def __init__(self, sam_uri: str, grow: float, placement: Placement | None = None,
                 sources: ModelSources = ModelSources()):
        self.sam_uri = sam_uri
        self.sources = sources
        self.grow = grow
        self.placement = placement or Placement.pick()
        self._model = None
        self._processor = None
        self.card: ModelCard | None = None

    @property
    def name(self) -> str:
        return f"sam:{self.sam_uri}" if self.sam_uri else "boxes"

    def load(self) -> None:
        if self.sam_uri:
            self._model, self._processor, self.card = load_sam(self.sam_uri, self.placement, self.sources)

    def mask(self, image: Image.Image, boxes: Sequence[Box]) -> Image.Image:
        """The keep mask of ``boxes`` on ``image`` (the image the output is painted over)."""
        boxes_only = box_mask(image.size, boxes, self.grow)
        if self._model is None or self._processor is None or not boxes:
            return boxes_only
        width, height = image.size
        prompts = [[[x0 * width, y0 * height, x1 * width, y1 * height] for x0, y0, x1, y1 in boxes]]
        inputs = self.placement.inputs(self._processor(images=image, input_boxes=prompts, return_tensors="pt"))
        with torch.inference_mode():
            predicted = self._model(**inputs, multimask_output=False).pred_masks
        segments = self._processor.image_processor.post_process_masks(
            predicted.float().cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu())[0][:, 0]
        keep = np.zeros((height, width), dtype=bool)
        for segment, box in zip(segments.numpy(), boxes):
            inside = np.asarray(box_mask(image.size, [box], self.grow), dtype=bool)
            clipped = segment & inside
            keep |= clipped if clipped.any() else inside
        return Image.fromarray(keep.astype(np.uint8) * 255)

"""Output geometry: the photo is cropped and scaled, never stretched.

A request that names no size gets the aspect bucket nearest the photo's aspect: SDXL's training
resolutions (about one megapixel, sides multiples of 64), scaled to the configured resolution.
The photo is then cropped to the output's aspect (a centred box, normalised to the photo) and
resized uniformly: one scale on both axes. Boxes found on the photo are mapped into the crop.
Pure functions; ``upright_size`` reads only an image header.
"""

from __future__ import annotations

import io
import math

from PIL import Image

__all__ = ["SDXL_BUCKETS", "SDXL_RESOLUTION", "Size", "Box", "buckets", "nearest_bucket", "centred_crop",
           "crop_pixels", "fit", "into_crop", "point_into_crop", "upright_size"]

Size = tuple[int, int]  # width, height
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in 0..1

SDXL_RESOLUTION = 1024
SDXL_BUCKETS: tuple[Size, ...] = ((1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216),
                                  (1344, 768), (768, 1344), (1536, 640), (640, 1536))
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def buckets(resolution: int = SDXL_RESOLUTION, multiple: int = 8) -> tuple[Size, ...]:
    """SDXL's buckets scaled by ``resolution`` / 1024, sides multiples of ``multiple``, each as near its
    bucket's aspect as those multiples allow (at 1024: the buckets themselves); duplicates dropped."""
    scale = resolution / SDXL_RESOLUTION
    scaled: list[Size] = []
    for width, height in SDXL_BUCKETS:
        aspect, area = width / height, width * height * scale * scale
        sides = [(w, h) for h in _near_multiples(math.sqrt(area / aspect), multiple)
                 for w in _near_multiples(math.sqrt(area * aspect), multiple)]
        best = min(sides, key=lambda s: (abs(math.log(s[0] / s[1] / aspect)), abs(s[0] * s[1] - area)))
        if best not in scaled:
            scaled.append(best)
    return tuple(scaled)


def _near_multiples(value: float, multiple: int) -> set[int]:
    value = round(value, 6)  # sqrt of an exact square may land a hair above it
    low = max(multiple, math.floor(value / multiple) * multiple)
    return {low, max(multiple, math.ceil(value / multiple) * multiple)}


def nearest_bucket(size: Size, candidates: tuple[Size, ...]) -> Size:
    """The candidate whose aspect is nearest ``size``'s (in log ratio, so 2:1 and 1:2 are equally far)."""
    aspect = math.log(size[0] / size[1])
    return min(candidates, key=lambda c: abs(math.log(c[0] / c[1]) - aspect))


def centred_crop(photo: Size, output: Size) -> Box:
    """The largest centred box of ``photo`` with ``output``'s aspect, normalised to the photo."""
    photo_aspect, output_aspect = photo[0] / photo[1], output[0] / output[1]
    if photo_aspect > output_aspect:  # wider: trim the sides
        half = output_aspect / photo_aspect / 2
        return (0.5 - half, 0.0, 0.5 + half, 1.0)
    half = photo_aspect / output_aspect / 2  # taller (or equal): trim top and bottom
    return (0.0, 0.5 - half, 1.0, 0.5 + half)


def crop_pixels(photo: Size, crop: Box) -> Box:
    """``crop`` in the photo's pixels (fractional: the crop keeps the output's aspect exactly)."""
    x0, y0, x1, y1 = crop
    return (x0 * photo[0], y0 * photo[1], x1 * photo[0], y1 * photo[1])


def fit(photo: Image.Image, output: Size) -> tuple[Image.Image, Box]:
    """``photo`` cropped to ``output``'s aspect (centred) and resized uniformly to ``output``, and the crop."""
    crop = centred_crop(photo.size, output)
    fitted = photo.convert("RGB").resize(output, Image.Resampling.LANCZOS, box=crop_pixels(photo.size, crop))
    return fitted, crop


def into_crop(box: Box, crop: Box) -> Box | None:
    """``box`` (normalised to the photo) normalised to ``crop`` and clipped to it; None when outside it."""
    width, height = crop[2] - crop[0], crop[3] - crop[1]
    x0, x1 = (min(max((v - crop[0]) / width, 0.0), 1.0) for v in (box[0], box[2]))
    y0, y1 = (min(max((v - crop[1]) / height, 0.0), 1.0) for v in (box[1], box[3]))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def point_into_crop(point: tuple[float, float], crop: Box) -> tuple[float, float]:
    """``point`` (normalised to the photo) normalised to ``crop``, clipped to it."""
    return (min(max((point[0] - crop[0]) / (crop[2] - crop[0]), 0.0), 1.0),
            min(max((point[1] - crop[1]) / (crop[3] - crop[1]), 0.0), 1.0))


def upright_size(data: bytes) -> Size | None:
    """The upright (EXIF-oriented) size from an image's header, without decoding pixels; None when the
    header cannot be read (the caller then decodes through the defensive decoder, which says why)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112)
    except Exception:  # hostile or unsupported headers: the defensive decoder answers them
        return None
    if width < 1 or height < 1:
        return None
    return (height, width) if orientation in _ROTATED else (width, height)

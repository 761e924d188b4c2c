"""One defensive image decoder shared by every stage.

Every refusal is an ``InvalidInputError`` (status ``rejected``) with a specific reason code:
``image_empty``, ``image_too_large``, ``image_format_not_allowed``, ``image_too_many_pixels``,
``image_bad_dimensions``, ``image_truncated``, ``image_undecodable``. Pixel limits are checked from
the header before any pixel is decoded, so a decompression bomb costs almost no memory.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidInputError
from .settings import ImageSettings

__all__ = ["decode_image", "ImageSettings"]


def _reject(reason: str, detail: str) -> InvalidInputError:
    return InvalidInputError(reason, detail, status="rejected")


def decode_image(data: bytes, limits: ImageSettings) -> Image.Image:
    """Decode untrusted bytes into an upright RGB image, or raise InvalidInputError.

    Animated images yield their first frame; alpha is composited on white; CMYK, 16-bit,
    palette and greyscale images are converted to 8-bit RGB.
    """
    if not data:
        raise _reject("image_empty", "the object is empty")
    if len(data) > limits.max_bytes:
        raise _reject("image_too_large", f"{len(data)} bytes exceeds the limit of {limits.max_bytes}")
    Image.init()  # register every plugin so the allow-list can name any of them
    allowed = {f.upper() for f in limits.formats} & set(Image.OPEN)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=sorted(allowed))
    except UnidentifiedImageError:
        detected = _sniff_format(data)
        if detected and detected not in allowed:
            raise _reject("image_format_not_allowed", f"{detected} is not one of {sorted(allowed)}") from None
        raise _reject("image_undecodable", "not a recognisable image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _reject("image_too_many_pixels", str(exc)) from None
    except Exception as exc:  # Pillow raises many kinds on hostile headers
        raise _reject(_reason_for(exc), f"{type(exc).__name__}: {exc}") from None

    width, height = image.size
    if width < 1 or height < 1:
        raise _reject("image_bad_dimensions", f"{width}x{height}")
    if width * height > limits.max_pixels:
        raise _reject("image_too_many_pixels", f"{width}x{height} exceeds {limits.max_pixels} pixels")
    if max(width, height) > limits.max_side:
        raise _reject("image_bad_dimensions", f"{width}x{height}: a side exceeds {limits.max_side} px")
    if max(width, height) / min(width, height) > limits.max_aspect:
        raise _reject("image_bad_dimensions", f"{width}x{height}: aspect ratio exceeds {limits.max_aspect}")

    try:
        image.seek(0)
        image.load()
        upright = ImageOps.exif_transpose(image)
    except Exception as exc:
        raise _reject(_reason_for(exc), f"{type(exc).__name__}: {exc}") from None
    return _to_rgb(upright)


def _reason_for(exc: Exception) -> str:
    return "image_truncated" if "truncated" in str(exc).lower() else "image_undecodable"


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda v: v / 256).convert("L")  # 16-bit → 8-bit
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG": "PNG", b"GIF8": "GIF", b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


def _sniff_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _MAGIC.items() if data.startswith(magic)), None)

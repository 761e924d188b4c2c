"""One defensive image decoder shared by every stage.

Every refusal is an ``InvalidInputError`` (status ``rejected``) with a specific reason code:
``image_empty``, ``image_too_large``, ``image_format_not_allowed``, ``image_too_many_pixels``,
``image_bad_dimensions``, ``image_truncated``, ``image_undecodable``. Pixel limits are checked from
the header before any pixel is decoded, so a decompression bomb costs almost no memory. HEIC/HEIF comes
through ``pillow-heif`` (it parses the header on open and decodes on load), AVIF through Pillow itself.
"""

from __future__ import annotations

import functools
import io
import struct
import warnings

import pillow_heif
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
    _register_plugins()
    allowed = {f.upper() for f in limits.formats} & set(Image.OPEN)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=sorted(allowed))
    except UnidentifiedImageError:
        detected = _sniff_format(data)
        if detected and detected not in allowed:
            named = f"{detected} (brand {data[8:12].decode('latin-1')})" if detected in _ISO_BMFF else detected
            raise _reject("image_format_not_allowed", f"{named} is not one of {sorted(allowed)}") from None
        if detected in _ISO_BMFF:
            raise _iso_bmff_refusal(data, detected, limits) from None
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


@functools.cache
def _register_plugins() -> None:
    """Every Pillow plugin (so the allow-list can name any of them) and pillow-heif's HEIF opener.

    Thumbnails, depth and auxiliary images are left unread: only the primary image is decoded.
    """
    Image.init()
    pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)


def _reason_for(exc: Exception) -> str:
    message = str(exc).lower()
    return "image_truncated" if "truncated" in message or "end of file" in message else "image_undecodable"


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
# ISO-BMFF brands (the ``ftyp`` box) → Pillow's format name; ``mif1``/``msf1`` alone mean a generic HEIF.
_BRANDS = {b"avif": "AVIF", b"avis": "AVIF", **dict.fromkeys(
    (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"), "HEIF")}
_ISO_BMFF = ("AVIF", "HEIF")


def _sniff_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp":
        return _ftyp_format(data)
    return next((name for magic, name in _MAGIC.items() if data.startswith(magic)), None)


def _ftyp_format(data: bytes) -> str | None:
    """AVIF if the major or a compatible brand names it (an AVIF is also a HEIF), else HEIF if one does."""
    size = struct.unpack(">I", data[:4])[0]
    brands = [data[8:12]] + [data[i:i + 4] for i in range(16, min(size, len(data), 256) - 3, 4)]
    known = [_BRANDS[brand] for brand in brands if brand in _BRANDS]
    return "AVIF" if "AVIF" in known else (known[0] if known else None)


def _iso_bmff_refusal(data: bytes, detected: str, limits: ImageSettings) -> InvalidInputError:
    """Why an allowed AVIF/HEIF that its plugin would not open is refused, read from its boxes.

    The decoders refuse a huge or cut-off file without saying so; the ``ispe`` (image spatial extent)
    boxes and the top-level box sizes say which it was.
    """
    extents, truncated = _iso_bmff_boxes(data)
    for width, height in extents:
        if width * height > limits.max_pixels:
            return _reject("image_too_many_pixels",
                           f"{detected} declares {width}x{height}, over {limits.max_pixels} pixels")
    if truncated:
        return _reject("image_truncated", f"{detected}: a box runs past the end of the {len(data)} bytes")
    return _reject("image_undecodable", f"{detected}: the decoder could not parse it")


_CONTAINERS = {b"meta": 4, b"iprp": 0, b"ipco": 0}  # boxes to descend into → bytes of header fields to skip


def _iso_bmff_boxes(data: bytes, start: int = 0, end: int | None = None,
                    depth: int = 0) -> tuple[list[tuple[int, int]], bool]:
    """The (width, height) of every ``ispe`` box, and whether a box claims more bytes than there are."""
    end = len(data) if end is None else end
    extents: list[tuple[int, int]] = []
    truncated, offset = False, start
    while offset + 8 <= end:
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        header = 8
        if size == 1 and offset + 16 <= end:
            size, header = struct.unpack(">Q", data[offset + 8:offset + 16])[0], 16
        elif size == 0:
            size = end - offset
        if size < header:
            break
        if offset + size > end:
            truncated, size = True, end - offset
        if kind == b"ispe" and size >= header + 12:
            extents.append(struct.unpack(">II", data[offset + header + 4:offset + header + 12]))
        elif kind in _CONTAINERS and depth < 4:
            inner, cut = _iso_bmff_boxes(data, offset + header + _CONTAINERS[kind], offset + size, depth + 1)
            extents, truncated = extents + inner, truncated or cut
        offset += size
    return extents, truncated or 0 < end - offset < 8  # a box header cut short

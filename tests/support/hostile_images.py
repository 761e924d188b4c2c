"""Hostile and unusual images, generated in memory, each with the outcome the shared decoder owes it.

``REFUSED``: name → (bytes, reason code). ``DECODED``: name → (bytes, expected RGB size); these are
legitimate but unusual files, and all of them are mostly green, so the test classifier calls them desks.
``BOMBS`` are the names whose headers promise far more pixels than the limits allow. HEIC and AVIF (the
photos phones take) are made here with pillow-heif and Pillow's own AVIF encoder.
"""

from __future__ import annotations

import io
import struct
import zlib

import pillow_heif
from PIL import Image, PngImagePlugin

__all__ = ["GREEN", "RED", "REFUSED", "DECODED", "BOMBS", "EXIF_TRANSPOSE", "encode", "png_with_header",
           "oriented", "marker_image"]

pillow_heif.register_heif_opener()  # Pillow saves "HEIF" through pillow-heif

GREEN, RED = (30, 200, 40), (220, 30, 30)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_header(width: int, height: int, *, bit_depth: int = 8, color_type: int = 2, raw: bytes | None = None) -> bytes:
    """A PNG whose IHDR says ``width``×``height``; ``raw`` scanlines (default: a few bytes, not the promised pixels)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    data = zlib.compress(raw if raw is not None else b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _jpeg_claiming(width: int, height: int) -> bytes:
    small = encode(Image.new("RGB", (8, 8), GREEN), "JPEG")
    sof = small.index(b"\xff\xc0")
    return small[:sof + 5] + struct.pack(">HH", height, width) + small[sof + 9:]


def _webp_claiming(width: int, height: int) -> bytes:
    """A lossless WebP header (VP8L) announcing ``width``×``height`` (at most 16384 a side), then nothing."""
    bits = (width - 1) | (height - 1) << 14
    body = b"\x2f" + struct.pack("<I", bits) + b"\0" * 16
    chunk = b"VP8L" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def _iso_bmff_claiming(fmt: str, width: int, height: int) -> bytes:
    """A 64×64 HEIF or AVIF whose ``ispe`` box (the declared size) says ``width``×``height``."""
    data = encode(_green((64, 64)), fmt)  # a size with no ``clap`` crop box, so ``ispe`` alone is the size
    ispe = data.index(b"ispe") + 8  # after the box's type, version and flags
    return data[:ispe] + struct.pack(">II", width, height) + data[ispe + 8:]


def _png_text_bomb() -> bytes:
    """A 40 KB PNG whose compressed text chunk inflates to 50 MB."""
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "A" * 50_000_000, zip=True)
    return encode(Image.new("RGB", (16, 16), GREEN), "PNG", pnginfo=info)


def _green(size=(64, 48), mode="RGB") -> Image.Image:
    return Image.new(mode, size, GREEN)


def _corrupt_crc(png: bytes) -> bytes:
    broken = bytearray(png)
    broken[29] ^= 0xFF  # inside the IHDR checksum
    return bytes(broken)


def _without_scan(jpeg: bytes) -> bytes:
    return jpeg[:jpeg.index(b"\xff\xda")] + b"\xff\xd9"


def _png16(color_type: int, sample: tuple[int, ...], size=(8, 6)) -> bytes:
    row = b"\0" + struct.pack(f">{len(sample)}H", *sample) * size[0]
    return png_with_header(*size, bit_depth=16, color_type=color_type, raw=row * size[1])


def _palette_with_alpha() -> bytes:
    image = Image.new("P", (16, 16), 0)
    image.putpalette([*GREEN, *RED] + [0] * 762)
    image.putpixel((0, 0), 1)
    return encode(image, "PNG", transparency=1)  # palette entry 1 (red) is fully transparent


def _animated(fmt: str, **options) -> bytes:
    frames = [_green((32, 32)), Image.new("RGB", (32, 32), RED)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **options)


def marker_image() -> Image.Image:
    """48×24, green with a red top-left quarter: every orientation moves the quarter somewhere else."""
    image = _green((48, 24))
    image.paste(RED, (0, 0, 24, 12))
    return image


def oriented(orientation: int, fmt: str = "JPEG") -> bytes:
    """``marker_image`` stored with an EXIF orientation (HEIF and AVIF writers store ``irot``/``imir`` boxes)."""
    image = marker_image()
    exif = image.getexif()
    exif[0x0112] = orientation
    return encode(image, fmt, quality=95, exif=exif.tobytes())


# What a viewer does to display each EXIF orientation (EXIF 2.32, tag 0x0112).
EXIF_TRANSPOSE = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                  4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
                  7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}

_JPEG = encode(_green(), "JPEG", quality=90)
_PNG = encode(_green(), "PNG")
_HEIC = encode(_green(), "HEIF")
_AVIF = encode(_green(), "AVIF")

REFUSED: dict[str, tuple[bytes, str]] = {
    "zero_bytes": (b"", "image_empty"),
    "text_named_jpg": (b"this is a text file somebody named photo.jpg\n", "image_undecodable"),
    "html_named_jpg": (b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>", "image_undecodable"),
    "svg_named_jpg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "image_undecodable"),
    "nul_bytes": (b"\0" * 4096, "image_undecodable"),
    "truncated_jpeg": (_JPEG[:len(_JPEG) // 2], "image_truncated"),
    "truncated_png": (_PNG[:70], "image_truncated"),
    "png_bad_checksum": (_corrupt_crc(_PNG), "image_undecodable"),
    "jpeg_without_scan": (_without_scan(_JPEG), "image_undecodable"),
    "png_zero_width": (png_with_header(0, 10), "image_undecodable"),
    "gif": (encode(_green(), "GIF"), "image_format_not_allowed"),
    "tiff": (encode(_green(), "TIFF"), "image_format_not_allowed"),
    "bmp": (encode(_green(), "BMP"), "image_format_not_allowed"),
    "png_header_50000x50000": (png_with_header(50_000, 50_000), "image_too_many_pixels"),
    "png_header_8000x8000": (png_with_header(8_000, 8_000), "image_too_many_pixels"),
    "jpeg_header_65000x65000": (_jpeg_claiming(65_000, 65_000), "image_too_many_pixels"),
    "webp_header_16384x16384": (_webp_claiming(16_384, 16_384), "image_too_many_pixels"),
    "png_text_chunk_bomb": (_png_text_bomb(), "image_undecodable"),
    "aspect_400_to_1": (png_with_header(4_000, 10), "image_bad_dimensions"),
    "aspect_1_to_400": (png_with_header(10, 4_000), "image_bad_dimensions"),
    "side_over_12000": (png_with_header(12_001, 1_000), "image_bad_dimensions"),
    "truncated_heic": (_HEIC[:len(_HEIC) // 2], "image_truncated"),
    "truncated_avif": (_AVIF[:len(_AVIF) // 2], "image_truncated"),
    "heic_cut_in_its_pixels": (_HEIC[:-10], "image_truncated"),
    "avif_cut_in_its_pixels": (_AVIF[:-10], "image_truncated"),
    "heic_ftyp_only": (_HEIC[:28], "image_undecodable"),
    "heic_header_8000x8000": (_iso_bmff_claiming("HEIF", 8_000, 8_000), "image_too_many_pixels"),
    "heic_header_50000x50000": (_iso_bmff_claiming("HEIF", 50_000, 50_000), "image_too_many_pixels"),
    "avif_header_8000x8000": (_iso_bmff_claiming("AVIF", 8_000, 8_000), "image_too_many_pixels"),
    "avif_header_50000x50000": (_iso_bmff_claiming("AVIF", 50_000, 50_000), "image_too_many_pixels"),
}

BOMBS = ("png_header_50000x50000", "png_header_8000x8000", "jpeg_header_65000x65000", "webp_header_16384x16384",
         "png_text_chunk_bomb", "heic_header_8000x8000", "heic_header_50000x50000", "avif_header_8000x8000",
         "avif_header_50000x50000")

DECODED: dict[str, tuple[bytes, tuple[int, int]]] = {
    "cmyk_jpeg": (encode(Image.new("CMYK", (40, 30), (200, 0, 200, 0)), "JPEG"), (40, 30)),
    "png_16bit_grey": (_png16(0, (0x8000,)), (8, 6)),
    "png_16bit_rgb": (_png16(2, tuple(c << 8 for c in GREEN)), (8, 6)),
    "png_16bit_rgba": (_png16(6, (*(c << 8 for c in GREEN), 0xFFFF)), (8, 6)),
    "palette_with_alpha": (_palette_with_alpha(), (16, 16)),
    "greyscale_alpha": (encode(Image.new("LA", (20, 10), (128, 255)), "PNG"), (20, 10)),
    "animated_png": (_animated("PNG"), (32, 32)),
    "animated_webp": (_animated("WEBP", lossless=True), (32, 32)),
    "one_pixel": (encode(_green((1, 1)), "PNG"), (1, 1)),
    "aspect_20_to_1": (encode(_green((400, 20)), "PNG"), (400, 20)),
    "exif_rotate_90": (oriented(6), (24, 48)),
    "exif_transverse": (oriented(7), (24, 48)),
    "exif_orientation_0": (oriented(0), (48, 24)),
    "exif_orientation_65535": (oriented(65535), (48, 24)),
    "exif_corrupt": (encode(marker_image(), "JPEG", exif=b"Exif\0\0MM\0*" + b"\xff" * 60), (48, 24)),
    "jpeg_corrupt_scan_data": (_JPEG[:300] + bytes(200) + _JPEG[500:], (64, 48)),
    "heic": (_HEIC, (64, 48)),
    "avif": (_AVIF, (64, 48)),
    "heic_exif_rotate_90": (oriented(6, "HEIF"), (24, 48)),
    "avif_exif_rotate_90": (oriented(6, "AVIF"), (24, 48)),
    "avif_with_alpha": (encode(Image.new("RGBA", (20, 10), (*GREEN, 128)), "AVIF"), (20, 10)),
}

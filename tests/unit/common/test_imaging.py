import io

import pytest
from PIL import Image

from deskgen.common.errors import InvalidInputError
from deskgen.common.imaging import ImageSettings, decode_image


def _encode(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("mode, fmt", [("RGB", "JPEG"), ("L", "PNG"), ("CMYK", "JPEG"), ("I;16", "PNG"),
                                       ("P", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"), ("RGB", "WEBP")])
def test_every_mode_becomes_rgb(mode, fmt):
    image = decode_image(_encode(Image.new(mode, (40, 30)), fmt))
    assert (image.mode, image.size) == ("RGB", (40, 30))


def test_transparency_is_composited_on_white():
    image = decode_image(_encode(Image.new("RGBA", (4, 4), (0, 0, 0, 0)), "PNG"))
    assert image.getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (60, 30))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise
    assert decode_image(_encode(image, "JPEG", exif=exif)).size == (30, 60)


@pytest.mark.parametrize("data, reason", [
    (b"", "image_empty"),
    (b"just some text named photo.jpg", "image_undecodable"),
    (_encode(Image.new("RGB", (10, 10)), "GIF"), "image_format_not_allowed"),
    (_encode(Image.new("RGB", (10, 10)), "BMP"), "image_format_not_allowed"),
    (_encode(Image.new("RGB", (64, 64)), "PNG")[:70], "image_truncated"),
])
def test_refusals_name_their_reason(data, reason):
    with pytest.raises(InvalidInputError) as info:
        decode_image(data)
    assert info.value.reason == reason and info.value.status == "rejected"


def test_decompression_bomb_is_refused_from_the_header():
    bomb = _encode(Image.new("1", (20000, 20000)), "PNG")  # ~50 KB file, 400 Mpx
    with pytest.raises(InvalidInputError) as info:
        decode_image(bomb)
    assert info.value.reason == "image_too_many_pixels"


@pytest.mark.parametrize("size, limits, reason", [
    ((100, 100), ImageSettings(max_pixels=5000), "image_too_many_pixels"),
    ((2000, 10), ImageSettings(), "image_bad_dimensions"),
    ((100, 100), ImageSettings(max_bytes=50), "image_too_large"),
])
def test_configured_limits_apply(size, limits, reason):
    with pytest.raises(InvalidInputError) as info:
        decode_image(_encode(Image.new("RGB", size), "PNG"), limits)
    assert info.value.reason == reason

"""The shared image decoder: every accepted image becomes upright 8-bit RGB, configured limits apply,
and hostile images (marked `hostile`) each get their specific outcome, with memory kept small while
refusing decompression bombs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from PIL import Image

from deskgen.common.errors import InvalidInputError
from deskgen.common.imaging import ImageSettings, decode_image
from support.hostile_images import (BOMBS, DECODED, EXIF_TRANSPOSE, GREEN, RED, REFUSED, encode, marker_image,
                                    oriented)

LIMITS = ImageSettings()


@pytest.mark.parametrize("mode, fmt", [("RGB", "JPEG"), ("L", "PNG"), ("I;16", "PNG"), ("P", "PNG"), ("RGBA", "PNG"),
                                       ("RGB", "WEBP"), ("RGB", "HEIF"), ("RGBA", "HEIF"), ("L", "AVIF"),
                                       ("RGBA", "AVIF")])
def test_every_mode_becomes_rgb(mode, fmt):
    image = decode_image(encode(Image.new(mode, (40, 30)), fmt), LIMITS)
    assert (image.mode, image.size) == ("RGB", (40, 30))


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_the_photos_phones_take_are_accepted_by_default(fmt):
    photo = Image.new("RGB", (64, 48), GREEN)
    photo.paste(RED, (0, 0, 32, 24))
    decoded = decode_image(encode(photo, fmt, quality=95), LIMITS)
    assert decoded.size == (64, 48)
    assert _close(decoded.getpixel((8, 8)), RED, 24) and _close(decoded.getpixel((56, 40)), GREEN, 24)


@pytest.mark.parametrize("fmt, brand", [("HEIF", "heic"), ("AVIF", "avif")])
def test_a_recognised_format_a_deployment_does_not_allow_is_named_in_the_refusal(fmt, brand):
    with pytest.raises(InvalidInputError) as refused:
        decode_image(encode(Image.new("RGB", (40, 30), GREEN), fmt), ImageSettings(formats=["JPEG", "PNG"]))
    assert refused.value.reason == "image_format_not_allowed"
    assert refused.value.detail.startswith(f"{fmt} (brand {brand}) is not one of"), refused.value.detail


def test_heic_limits_are_checked_from_the_header_before_decoding():
    with pytest.raises(InvalidInputError) as refused:
        decode_image(encode(Image.new("RGB", (100, 100)), "HEIF"), ImageSettings(max_pixels=5000))
    assert refused.value.reason == "image_too_many_pixels"


def test_transparency_is_composited_on_white():
    image = decode_image(encode(Image.new("RGBA", (4, 4), (0, 0, 0, 0)), "PNG"), LIMITS)
    assert image.getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("size, limits, reason", [
    ((100, 100), ImageSettings(max_pixels=5000), "image_too_many_pixels"),
    ((2000, 10), ImageSettings(), "image_bad_dimensions"),
    ((100, 100), ImageSettings(max_bytes=50), "image_too_large"),
])
def test_configured_limits_apply(size, limits, reason):
    with pytest.raises(InvalidInputError) as info:
        decode_image(encode(Image.new("RGB", size), "PNG"), limits)
    assert info.value.reason == reason


# ---- hostile images ------------------------------------------------------------------------------

@pytest.mark.hostile
@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_hostile_image_is_refused_with_its_specific_reason(name):
    data, reason = REFUSED[name]
    with pytest.raises(InvalidInputError) as refused:
        decode_image(data, LIMITS)
    assert (refused.value.reason, refused.value.status) == (reason, "rejected"), refused.value.detail


@pytest.mark.hostile
@pytest.mark.parametrize("name", sorted(DECODED))
def test_an_unusual_but_legitimate_image_decodes_to_upright_8_bit_rgb(name):
    data, size = DECODED[name]
    image = decode_image(data, LIMITS)
    assert (image.mode, image.size) == ("RGB", size)


def _close(pixel, expected, tolerance=12):
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected))


@pytest.mark.hostile
def test_colour_survives_cmyk_16_bit_palette_alpha_and_animation():
    assert _close(decode_image(DECODED["cmyk_jpeg"][0], LIMITS).getpixel((5, 5)), (55, 255, 55))  # 255 - C, 255 - M, 255 - Y
    assert decode_image(DECODED["png_16bit_grey"][0], LIMITS).getpixel((0, 0)) == (128, 128, 128)
    assert decode_image(DECODED["png_16bit_rgb"][0], LIMITS).getpixel((0, 0)) == GREEN
    palette = decode_image(DECODED["palette_with_alpha"][0], LIMITS)
    assert (palette.getpixel((0, 0)), palette.getpixel((5, 5))) == ((255, 255, 255), GREEN)  # transparent → white
    for name in ("animated_png", "animated_webp"):
        assert decode_image(DECODED[name][0], LIMITS).getpixel((3, 3)) == GREEN, f"{name}: not the first frame"


@pytest.mark.hostile
@pytest.mark.parametrize("fmt", ["JPEG", "HEIF", "AVIF"])
@pytest.mark.parametrize("orientation", sorted(EXIF_TRANSPOSE))
def test_every_exif_orientation_is_displayed_upright(orientation, fmt):
    operation = EXIF_TRANSPOSE[orientation]
    expected = marker_image() if operation is None else marker_image().transpose(operation)
    decoded = decode_image(oriented(orientation, fmt), LIMITS)
    assert decoded.size == expected.size
    width, height = expected.size
    for x, y in ((width // 4, height // 4), (3 * width // 4, height // 4), (width // 4, 3 * height // 4),
                 (3 * width // 4, 3 * height // 4)):
        assert _close(decoded.getpixel((x, y)), expected.getpixel((x, y)), 40), (orientation, (x, y))


@pytest.mark.hostile
def test_nonsense_exif_orientations_leave_the_image_as_stored():
    for name in ("exif_orientation_0", "exif_orientation_65535", "exif_corrupt"):
        decoded = decode_image(DECODED[name][0], LIMITS)
        assert _close(decoded.getpixel((6, 3)), RED, 40) and _close(decoded.getpixel((40, 20)), GREEN, 40), name


_MEASURE = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path

    def peak_kib():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

    from deskgen.common.errors import InvalidInputError
    from deskgen.common.imaging import ImageSettings, decode_image
    LIMITS = ImageSettings()
    decode_image(Path(sys.argv[1]).read_bytes(), LIMITS)  # warm up: imports, plugin registry
    limit = 2 << 30  # a true bomb fails with MemoryError here instead of swapping the machine
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    growth = {}
    for path in sys.argv[2:]:
        data = Path(path).read_bytes()
        before = peak_kib()
        try:
            decode_image(data, LIMITS)
            outcome = "decoded"
        except InvalidInputError as exc:
            outcome = exc.reason
        growth[Path(path).name] = (outcome, (peak_kib() - before) / 1024)
    print(json.dumps(growth))
""")


@pytest.mark.hostile
def test_refusing_a_decompression_bomb_keeps_peak_memory_small(tmp_path):
    warmup = tmp_path / "warmup"
    warmup.write_bytes(DECODED["one_pixel"][0])
    paths = []
    for name in BOMBS:
        paths.append(tmp_path / name)
        paths[-1].write_bytes(REFUSED[name][0])
    run = subprocess.run([sys.executable, "-c", _MEASURE, str(warmup), *map(str, paths)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    growth = json.loads(run.stdout)
    for name in BOMBS:
        outcome, peak_growth_mib = growth[name]
        assert outcome == REFUSED[name][1], (name, outcome)
        assert peak_growth_mib < 64, f"{name}: peak memory grew by {peak_growth_mib:.0f} MiB while refusing it"

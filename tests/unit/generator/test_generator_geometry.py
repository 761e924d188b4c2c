"""Output geometry: aspect buckets, the centred crop, uniform scaling and boxes mapped into the crop."""

import io
import math

import numpy as np
import pytest
from PIL import Image

from deskgen.services.generator.geometry import (SDXL_BUCKETS, buckets, centred_crop, crop_pixels, fit, into_crop,
                                                 nearest_bucket, point_into_crop, upright_size)
from deskgen.services.generator.settings import GeneratorSettings

PHOTOS = {"4:3": (4032, 3024), "3:2": (6000, 4000), "16:9": (1920, 1080), "9:16": (1080, 1920), "1:1": (800, 800)}


def test_at_1024_the_buckets_are_the_sdxl_training_resolutions():
    assert buckets() == SDXL_BUCKETS
    assert all(w % 64 == 0 and h % 64 == 0 and 0.85e6 < w * h < 1.05e6 for w, h in buckets())


def test_scaled_buckets_keep_their_aspects_and_the_area_on_multiples_of_eight():
    small = buckets(64, multiple=8)
    assert len(small) == len(SDXL_BUCKETS)
    for (w, h), (big_w, big_h) in zip(small, SDXL_BUCKETS):
        assert w % 8 == 0 and h % 8 == 0
        assert abs(math.log(w / h / (big_w / big_h))) < 0.05
        assert 0.8 < w * h / 64**2 < 1.1


@pytest.mark.parametrize("photo, expected", [("4:3", (1152, 896)), ("3:2", (1216, 832)), ("16:9", (1344, 768)),
                                             ("9:16", (768, 1344)), ("1:1", (1024, 1024))])
def test_a_photo_takes_the_bucket_nearest_its_aspect(photo, expected):
    assert nearest_bucket(PHOTOS[photo], buckets()) == expected


def test_the_nearest_bucket_is_symmetric_in_portrait_and_landscape():
    for width, height in [(4032, 3024), (1000, 620), (3000, 1000)]:
        w, h = nearest_bucket((width, height), buckets())
        assert nearest_bucket((height, width), buckets()) == (h, w)


@pytest.mark.parametrize("photo", list(PHOTOS))
@pytest.mark.parametrize("output", [(1024, 1024), (1152, 896), (768, 1344), (96, 40)])
def test_the_centred_crop_has_the_output_aspect_and_stays_inside_the_photo(photo, output):
    size = PHOTOS[photo]
    crop = centred_crop(size, output)
    x0, y0, x1, y1 = crop_pixels(size, crop)
    assert 0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]
    assert (x1 - x0) / (y1 - y0) == pytest.approx(output[0] / output[1], rel=1e-9)
    assert crop[0] + crop[2] == pytest.approx(1) and crop[1] + crop[3] == pytest.approx(1)
    assert crop[0] == 0 or crop[1] == 0  # the largest such box: it spans one whole side


def test_fit_scales_uniformly_after_the_crop():
    photo = Image.new("RGB", (400, 300), "white")
    photo.paste((0, 0, 0), (150, 100, 250, 200))  # a 100 px square in the middle
    fitted, crop = fit(photo, (64, 64))
    assert fitted.size == (64, 64) and crop == pytest.approx((0.125, 0, 0.875, 1))
    dark = np.asarray(fitted.convert("L")) < 128
    ys, xs = np.nonzero(dark)
    assert xs.max() - xs.min() == ys.max() - ys.min()  # still a square


def test_boxes_map_into_the_crop_and_those_outside_it_are_dropped():
    crop = (0.25, 0.0, 0.75, 1.0)
    assert into_crop((0.25, 0.5, 0.5, 1.0), crop) == pytest.approx((0.0, 0.5, 0.5, 1.0))
    assert into_crop((0.1, 0.1, 0.5, 0.2), crop) == pytest.approx((0.0, 0.1, 0.5, 0.2))  # clipped
    assert into_crop((0.0, 0.0, 0.2, 1.0), crop) is None
    assert point_into_crop((0.5, 0.5), crop) == pytest.approx((0.5, 0.5))


def _jpeg(size, orientation=None) -> bytes:
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    Image.new("RGB", size, "grey").save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def test_the_upright_size_comes_from_the_header_with_exif_rotation():
    assert upright_size(_jpeg((120, 90))) == (120, 90)
    assert upright_size(_jpeg((120, 90), orientation=6)) == (90, 120)
    assert upright_size(b"not an image") is None


def test_the_resolution_scales_the_buckets_and_defaults_to_the_default_size():
    assert GeneratorSettings().aspect_buckets() == SDXL_BUCKETS
    assert GeneratorSettings(width=64, height=64, min_side=32).aspect_buckets() == buckets(64)
    assert GeneratorSettings(width=64, height=64, min_side=32, resolution=1024).aspect_buckets() == SDXL_BUCKETS
    with pytest.raises(ValueError, match="resolution 1536"):
        GeneratorSettings(resolution=1536)

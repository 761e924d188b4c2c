"""True geometry through the stage: photos of every common aspect, holding a drawn circle, come out with the
circle still round, the kept pixels equal to the photo cropped and scaled uniformly, and (with no size asked
for) the output at the bucket nearest the photo's aspect."""

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from deskgen.services.generator.components import Placement
from deskgen.services.generator.geometry import crop_pixels, fit
from deskgen.services.generator.locate import Detection
from deskgen.services.generator.masks import DeviceMasker
from deskgen.services.generator.stage import Components, GeneratorStage
from support.blobs import MemoryBlobs

CPU = Placement.pick("cpu")
# Photo sizes by aspect, and the dev bucket (resolution 64) each one takes.
PHOTOS = {"4:3": ((400, 300), (72, 56)), "3:2": ((420, 280), (80, 56)), "16:9": ((448, 252), (88, 48)),
          "9:16": ((252, 448), (48, 88)), "1:1": ((300, 300), (64, 64))}


class CircleDetector:
    """Finds the dark circle on the photo: a "monitor" box around it, normalised to the image it is given."""

    name = "circle"

    def load(self) -> None:
        pass

    def detect(self, image, wanted):
        dark = np.asarray(image.convert("L")) < 128
        ys, xs = np.nonzero(dark)
        width, height = image.size
        box = (xs.min() / width - 0.03, ys.min() / height - 0.03, (xs.max() + 1) / width + 0.03,
               (ys.max() + 1) / height + 0.03)
        return {"monitor": [Detection("monitor", box, (0.5, 0.5), 0.9)]}


def _circle_photo(size) -> Image.Image:
    """A light, noisy photo with a black circle in the middle (diameter 36 % of the shorter side: inside
    every crop the tests ask for)."""
    width, height = size
    noise = np.random.default_rng(1).integers(170, 255, (height, width, 3), dtype=np.uint8)
    photo = Image.fromarray(noise)
    radius = 0.18 * min(size)
    ImageDraw.Draw(photo).ellipse((width / 2 - radius, height / 2 - radius, width / 2 + radius,
                                   height / 2 + radius), fill=(0, 0, 0))
    return photo


def _axis_ratio(image: Image.Image, region: np.ndarray) -> float:
    """Width over height of the dark shape inside ``region``, from its second moments (sub-pixel, so a
    circle a few dozen pixels across measures within a fraction of a percent)."""
    # 0 on the light background (never darker than 170), 1 inside the black circle, a fraction on its edge.
    darkness = np.clip((170 - np.asarray(image.convert("L"), dtype=float)) / 170, 0, 1) * region
    ys, xs = np.indices(darkness.shape)
    total = darkness.sum()
    mean_x, mean_y = (darkness * xs).sum() / total, (darkness * ys).sum() / total
    var_x, var_y = (darkness * (xs - mean_x) ** 2).sum() / total, (darkness * (ys - mean_y) ** 2).sum() / total
    return float(np.sqrt(var_x / var_y))


@pytest.fixture
def stage(tiny_model, tiny_settings):
    masker = DeviceMasker("", grow=0.02, placement=CPU)
    return GeneratorStage(Components(tiny_model, masker, CircleDetector()), tiny_settings)


@pytest.mark.parametrize("size", [None, (64, 64), (96, 40)], ids=["bucket", "square", "wide"])
@pytest.mark.parametrize("aspect", list(PHOTOS))
def test_the_kept_circle_stays_round_and_its_pixels_are_the_photo_scaled_uniformly(stage, captioned, photo_blobs,
                                                                                   aspect, size):
    photo_size, bucket = PHOTOS[aspect]
    photo = _circle_photo(photo_size)
    request = {"mode": "keep_devices", "fast": True} | ({"width": size[0], "height": size[1]} if size else {})
    job = f"job-{aspect.replace(':', 'x')}"

    outcome = stage.handle(captioned(job, request), photo_blobs(job, photo))

    section = outcome.section
    output = (section["width"], section["height"])
    assert output == (size or bucket) and section["mode"] == "keep_devices"
    image_blob, mask_blob = outcome.blobs
    result = Image.open(io.BytesIO(image_blob.data)).convert("RGB")
    kept = np.asarray(Image.open(io.BytesIO(mask_blob.data))) == 255
    assert result.size == output and kept.any() and (~kept).any()
    # The kept pixels are the photo cropped to the output's aspect and scaled by one factor.
    expected, crop = fit(photo, output)
    assert section["crop"] == pytest.approx(list(crop), abs=1e-6)
    assert np.array_equal(np.asarray(result)[kept], np.asarray(expected)[kept])
    x0, y0, x1, y1 = crop_pixels(photo_size, crop)
    assert (x1 - x0) / (y1 - y0) == pytest.approx(output[0] / output[1], rel=0.01)
    assert _axis_ratio(result, kept) == pytest.approx(1.0, abs=0.02)
    # The kept device's box is in the output's coordinates: around the circle, which sits in the middle.
    (device,) = section["kept_devices"]
    bx0, by0, bx1, by1 = device["box"]
    assert bx0 < 0.5 < bx1 and by0 < 0.5 < by1 and (bx0, by0, bx1, by1) != (0, 0, 1, 1)


def test_the_circle_measure_sees_a_stretch():
    photo = _circle_photo((400, 300)).resize((64, 64), Image.Resampling.LANCZOS)  # the old, stretched path
    assert _axis_ratio(photo, np.ones((64, 64), dtype=bool)) == pytest.approx(3 / 4, abs=0.02)


class HeaderOnlyBlobs(MemoryBlobs):
    def image(self, key):
        raise AssertionError("a restyle with no size reads only the photo's header")


@pytest.mark.parametrize("aspect", list(PHOTOS))
def test_a_restyle_with_no_size_takes_the_bucket_nearest_the_photo_reading_only_its_header(stage, captioned,
                                                                                           photo_blobs, aspect):
    photo_size, bucket = PHOTOS[aspect]
    blobs = HeaderOnlyBlobs(photo_blobs("job-restyle", _circle_photo(photo_size)).objects)

    outcome = stage.handle(captioned("job-restyle", {}), blobs)

    assert (outcome.section["width"], outcome.section["height"]) == bucket and "crop" not in outcome.section
    assert Image.open(io.BytesIO(outcome.blobs[0].data)).size == bucket

"""Preprocessing: size, normalisation and channel order per architecture."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from deskgen.services.classifier.networks import preprocessing_for


def test_every_photo_becomes_a_224_square_float32_nchw_tensor():
    images = [Image.new("RGB", (640, 480)), Image.new("RGB", (100, 900)), Image.new("RGB", (224, 224))]
    pixels = preprocessing_for("efficientnet_lite0")(images)
    assert pixels.shape == (3, 3, 224, 224)
    assert pixels.dtype == torch.float32


def test_vgg16_uses_imagenet_mean_and_std():
    gray = Image.new("RGB", (300, 200), (124, 116, 104))
    pixels = preprocessing_for("vgg16")([gray])[0]
    expected = (np.array([124, 116, 104]) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    assert pixels.mean(dim=(1, 2)).numpy() == pytest.approx(expected, abs=1e-4)


def test_efficientnet_lite_scales_pixels_to_minus_one_one():
    black, white = Image.new("RGB", (50, 50), (0, 0, 0)), Image.new("RGB", (50, 50), (255, 255, 255))
    pixels = preprocessing_for("efficientnet_lite0")([black, white])
    assert float(pixels[0].max()) == pytest.approx(-127 / 128)
    assert float(pixels[1].min()) == pytest.approx(128 / 128)


def test_channels_stay_in_rgb_order():
    red = Image.new("RGB", (64, 64), (255, 0, 0))
    channel_means = preprocessing_for("vgg16")([red])[0].mean(dim=(1, 2))
    assert channel_means[0] > 2 and channel_means[1] < -1.5 and channel_means[2] < -1.5


def test_the_whole_frame_is_kept_not_centre_cropped():
    image = Image.new("RGB", (400, 100), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 40, 100))  # a white strip at the far left edge
    pixels = preprocessing_for("vgg16")([image])[0]
    assert float(pixels[0, :, :10].mean()) > 2


def test_greyscale_and_alpha_images_are_converted_to_rgb():
    pixels = preprocessing_for("vgg16")([Image.new("L", (30, 30), 128), Image.new("RGBA", (30, 30))])
    assert pixels.shape == (2, 3, 224, 224)


def test_an_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="unknown classifier architecture"):
        preprocessing_for("resnet50")

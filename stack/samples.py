"""Sample photos for the demo and the tests, made on the spot: drawn desk setups, photos that ship
with scikit-image (a coffee cup, a rocket: not desks) and a file that is not an image at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["draw_desk", "write_samples"]


def draw_desk(seed: int = 0, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A flat drawing of a desk setup: wall, wooden desk, monitor showing text, keyboard, mouse."""
    rng = np.random.default_rng(seed)
    width, height = size
    shade = lambda base: tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in base)  # noqa: E731
    image = Image.new("RGB", size, shade((200, 205, 210)))
    draw = ImageDraw.Draw(image)
    top = int(height * rng.uniform(0.58, 0.66))
    wood = shade((150, 105, 65))
    draw.rectangle([0, top, width, height], fill=wood)
    for y in range(top, height, 6):
        draw.line([0, y, width, y + int(rng.integers(-2, 3))], fill=shade(wood))
    left = int(width * rng.uniform(0.2, 0.32))
    right = left + int(width * 0.47)
    screen_top = int(height * 0.12)
    draw.rectangle([left, screen_top, right, top - 40], fill=(20, 20, 22))
    draw.rectangle([left + 12, screen_top + 12, right - 12, top - 60], fill=shade((235, 240, 245)))
    for y in range(screen_top + 25, top - 70, 12):
        draw.rectangle([left + 25, y, left + 25 + int(rng.integers(80, right - left - 60)), y + 6], fill=(60, 60, 70))
    middle = (left + right) // 2
    draw.rectangle([middle - 20, top - 40, middle + 20, top], fill=(40, 40, 44))
    draw.rectangle([middle - 60, top - 5, middle + 60, top + 5], fill=(40, 40, 44))
    keys_top = top + 30
    draw.rectangle([left - 20, keys_top, right - 20, keys_top + 70], fill=(30, 30, 32))
    for row in range(4):
        for column in range((right - left - 16) // 16):
            x, y = left - 12 + column * 16, keys_top + 6 + row * 16
            draw.rectangle([x, y, x + 12, y + 12], fill=(70, 70, 75))
    draw.ellipse([right + 20, keys_top + 10, right + 60, keys_top + 65], fill=(35, 35, 38))
    return image


def write_samples(folder: Path) -> list[tuple[Path, str]]:
    """Write the demo's photos; returns (path, what the pipeline should make of it) pairs."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for seed in (1, 2):
        path = folder / f"desk-drawing-{seed}.png"
        draw_desk(seed=seed).save(path)
        samples.append((path, "a drawn desk setup: passes the classifier, gets captioned and generated"))
    for name in ("coffee", "rocket"):
        path = folder / f"{name}.jpg"
        Image.fromarray(getattr(data, name)()).save(path, quality=92)
        samples.append((path, f"scikit-image's {name} photo: not a desk, rejected by the classifier"))
    path = folder / "not-a-photo.jpg"
    path.write_text("this is a text file with a .jpg name\n")
    samples.append((path, "text named .jpg: rejected by the shared decoder"))
    return samples

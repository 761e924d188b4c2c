"""Helpers for the classifier tests: in-memory blobs, events, drawn desk photos."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from deskgen.common.events import Event
from deskgen.common.imaging import decode_image

__all__ = ["MemoryBlobs", "png", "uploaded", "draw_desk"]


class MemoryBlobs:
    """Blobs over a dict of raw objects, decoded by the shared decoder as the runtime does."""

    def __init__(self, objects: dict[str, bytes]):
        self.objects = objects

    def read(self, key: str) -> bytes:
        return self.objects[key]

    def image(self, key: str) -> Image.Image:
        return decode_image(self.read(key))


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def uploaded(job: str) -> Event:
    return Event(kind="uploaded", id=f"evt-{job}", source="/tests", time="2026-11-20T10:00:00Z",
                 data={"job_id": job, "image_key": f"uploads/{job}/original.png", "uploaded_at": "2026-11-20T10:00:00Z",
                       "request": {}, "timeline": []})


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

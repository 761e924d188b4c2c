"""Blobs over a dict of raw objects, for unit tests of stages that read the job's photo."""

from __future__ import annotations

from PIL import Image

from deskgen.common.imaging import ImageSettings, decode_image

__all__ = ["MemoryBlobs"]

LIMITS = ImageSettings()


class MemoryBlobs:
    """Blobs over a dict of raw objects, decoded by the shared decoder as the runtime does."""

    def __init__(self, objects: dict[str, bytes]):
        self.objects = objects

    def read(self, key: str) -> bytes:
        return self.objects[key]

    def image(self, key: str) -> Image.Image:
        return decode_image(self.read(key), LIMITS)

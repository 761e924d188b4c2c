"""Helpers for the classifier tests: in-memory blobs, events, drawn desk photos."""

from __future__ import annotations

import io

from PIL import Image

from deskgen.common.events import Event
from samples import draw_desk  # noqa: F401 (re-exported for the tests)
from support.blobs import MemoryBlobs  # noqa: F401 (re-exported for the tests)

__all__ = ["MemoryBlobs", "png", "uploaded", "draw_desk"]


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def uploaded(job: str) -> Event:
    return Event(kind="uploaded", id=f"evt-{job}", source="/tests", time="2026-11-20T10:00:00Z",
                 data={"job_id": job, "image_key": f"uploads/{job}/original.png", "uploaded_at": "2026-11-20T10:00:00Z",
                       "request": {}, "timeline": {}})

"""Deterministic object keys derived from the job id: a replay overwrites, never duplicates.

Under ``generated/<job>/`` a preset's image is ``<preset>.png`` (preset names: ``[a-z0-9_]``); every other
object there has a ``-`` in its name, which no preset name holds, so the two can never share a key.
"""

from __future__ import annotations

import re

from .errors import InvalidInputError
from .events import JOB_ID

__all__ = ["UPLOADS", "GENERATED", "upload_key", "generated_key", "generated_mask_key", "check_job_id",
           "check_object_key"]

UPLOADS = "uploads"
GENERATED = "generated"

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,511}$")
_NAME = re.compile(r"^[a-z0-9_]{1,32}$")
_EXTENSIONS = {"jpeg": "jpg", "jpg": "jpg", "png": "png", "webp": "webp", "heic": "heic", "heif": "heif",
               "avif": "avif"}


def check_job_id(job_id: str) -> str:
    """Return ``job_id`` if it is safe inside an object key, else raise InvalidInputError."""
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise InvalidInputError("invalid_job_id", f"job id {job_id!r:.80} must match {JOB_ID.pattern}", status="failed")
    return job_id


def check_object_key(key: str, prefix: str | None = None) -> str:
    """Return ``key`` if it is relative, has no ``..`` or empty segments and (optionally) lies under ``prefix``."""
    segments = key.split("/") if isinstance(key, str) else []
    if not isinstance(key, str) or not _KEY.fullmatch(key) or any(s in ("", ".", "..") for s in segments):
        raise InvalidInputError("invalid_object_key", f"object key {key!r:.120} is not a safe relative key", status="failed")
    if prefix is not None and not key.startswith(prefix.rstrip("/") + "/"):
        raise InvalidInputError("invalid_object_key", f"object key {key!r:.120} is outside {prefix!r}", status="failed")
    return key


def upload_key(job_id: str, extension: str) -> str:
    """``uploads/<job>/original.<ext>`` for a photo the backend stores."""
    ext = _EXTENSIONS.get(extension.lower().lstrip("."))
    if ext is None:
        raise InvalidInputError("image_format_not_allowed", f"extension {extension!r} is not one of {', '.join(sorted(set(_EXTENSIONS.values())))}")
    return f"{UPLOADS}/{check_job_id(job_id)}/original.{ext}"


def generated_key(job_id: str, preset: str) -> str:
    """``generated/<job>/<preset>.png`` for the generator's image."""
    if not isinstance(preset, str) or not _NAME.fullmatch(preset):
        raise InvalidInputError("unknown_preset", f"preset {preset!r:.40} is not a valid preset name")
    return f"{GENERATED}/{check_job_id(job_id)}/{preset}.png"


def generated_mask_key(job_id: str) -> str:
    """``generated/<job>/keep-mask.png``: the keep mask of a keep_devices image (white = the user's own pixels)."""
    return f"{GENERATED}/{check_job_id(job_id)}/keep-mask.png"

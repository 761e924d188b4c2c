"""``python -m deskgen.services.captioner``: read settings, build the captioner, serve it."""

from __future__ import annotations

import logging

import torch

from deskgen.common.errors import FatalError
from deskgen.common.runtime import serve
from deskgen.common.settings import load

from .model import BlipCaptioner
from .settings import CaptionerSettings
from .stage import CaptionerStage

__all__ = ["main", "build_captioner"]


def build_captioner(settings: CaptionerSettings) -> BlipCaptioner:
    """The captioner the settings describe (not loaded yet)."""
    return BlipCaptioner(settings.model, settings.prompts, max_new_tokens=settings.max_new_tokens,
                         num_beams=settings.num_beams, precision=settings.precision, device=settings.device)


def main() -> int:
    try:
        settings = load(CaptionerSettings)
        if settings.threads:
            torch.set_num_threads(settings.threads)
        captioner = build_captioner(settings)
    except (FatalError, ValueError) as exc:
        logging.basicConfig()
        logging.getLogger("deskgen.captioner").error("cannot start the captioner: %s", exc)
        return 2
    return serve(CaptionerStage(captioner))


if __name__ == "__main__":
    raise SystemExit(main())

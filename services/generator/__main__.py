"""``python -m deskgen.services.generator``: read settings, build model and stage, serve."""

from __future__ import annotations

import logging

from deskgen.common.errors import FatalError
from deskgen.common.runtime import serve
from deskgen.common.settings import load
from deskgen.services.generator.model import build_model
from deskgen.services.generator.settings import GeneratorSettings
from deskgen.services.generator.stage import GeneratorStage

__all__ = ["main"]

log = logging.getLogger("deskgen.services.generator")


def main() -> int:
    try:
        settings = load(GeneratorSettings)
        stage = GeneratorStage(build_model(settings), settings)
    except (FatalError, ValueError) as exc:
        logging.basicConfig()
        log.error("cannot start generator: %s", exc)
        return 2
    return serve(stage)


if __name__ == "__main__":
    raise SystemExit(main())

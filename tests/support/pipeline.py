"""The stack's pipeline (stack/pipeline.py) with this folder's test stages as its ``start()`` default."""

from __future__ import annotations

from pathlib import Path

from pipeline import Pipeline as StackPipeline
from pipeline import Service, answers_ok, dlq_payload, photo_bytes

__all__ = ["Pipeline", "Service", "answers_ok", "dlq_payload", "photo_bytes"]


class Pipeline(StackPipeline):
    """``start(stage)`` runs tests/support/stages.py's stage; ``start(stage, real=True)`` the service."""

    stage_script = Path(__file__).with_name("stages.py")

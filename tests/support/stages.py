"""Small, real stages for testing the runtime: they read the photo from S3 through the shared
decoder, make a decision from its pixels and write a PNG, with no model.

Run one as a service: ``python tests/support/stages.py classifier|captioner|generator``: the same
start-up as ``deskgen run`` (``build_stage`` + ``common.service.main``), with ``TestStageSettings``.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import time

from PIL import ImageStat
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from deskgen.common.errors import TransientError
from deskgen.common.keys import generated_key
from deskgen.common.runtime import Runtime
from deskgen.common.service import main
from deskgen.common.settings import StageSettings
from deskgen.common.stage import Blob, Emit, Reject, Stage

_MODEL = {"name": "test-stage", "version": "1"}


class TestStageSettings(StageSettings):
    """``TEST_STAGE_*``: how a test stage misbehaves."""

    __test__ = False  # not a pytest class
    model_config = SettingsConfigDict(env_prefix="TEST_STAGE_", extra="ignore")

    sleep_s: float = Field(0.0, description="Every job takes this long (slow-job and crash tests).")
    die_on_width: int | None = Field(None, description="The classifier kills its own process on a photo of this "
                                     "width, the way a native crash in a decoder would.")
    stop_fetching: bool = Field(False, description="The Kafka client stops fetching the partitions it is "
                                "assigned (a stuck client).")
    transient: bool = Field(False, description="Every job fails with a TransientError (retry tests).")


class _TestStage(Stage):
    def __init__(self, settings: TestStageSettings):
        self.settings = settings

    def _pause(self) -> None:
        if self.settings.transient:
            raise TransientError("TEST_STAGE_TRANSIENT is set")
        time.sleep(self.settings.sleep_s)


class GreenClassifier(_TestStage):
    """A photo is a 'desk' when its green channel outweighs its red one."""

    name = "classifier"
    batch_max = 4

    def handle(self, event, blobs):
        self._pause()
        image = blobs.image(event.data["image_key"])
        if image.width == self.settings.die_on_width:
            os.kill(os.getpid(), signal.SIGKILL)
        red, green, _ = ImageStat.Stat(image).mean
        score = green / max(red + green, 1e-6)
        section = {"label": "desk" if score >= 0.5 else "not_desk", "score": score, "threshold": 0.5,
                   "model": _MODEL, "inference_ms": 0.0, "evidence": []}
        return Emit(section) if score >= 0.5 else Reject("not_desk", f"score {score:.2f} < 0.5", section)


class SizeCaptioner(_TestStage):
    """Captions the photo with its size."""

    name = "captioner"

    def handle(self, event, blobs):
        self._pause()
        image = blobs.image(event.data["image_key"])
        text = f"a photo of {image.width} by {image.height} pixels"
        return Emit({"captions": [{"prompt": "size", "text": text}], "keywords": [{"word": "photo", "count": 1}],
                     "prompt": text, "negative_prompt": "", "preset": event.data["request"].get("preset", "mix"),
                     "concept": event.data["request"].get("concept", "BASIC"), "model": _MODEL})


class ThumbnailGenerator(_TestStage):
    """'Generates' a 32×32 thumbnail of the photo and stores it as the job's PNG."""

    name = "generator"

    def handle(self, event, blobs):
        self._pause()
        image = blobs.image(event.data["image_key"]).resize((32, 32))
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        preset = event.data["captioning"]["preset"]
        key = generated_key(event.job_id, preset)
        return Emit({"image_key": key, "preset": preset, "seed": 0, "steps": 0, "guidance": 0.0, "width": 32,
                     "height": 32, "scheduler": "none", "model": _MODEL},
                    blobs=(Blob(key, buffer.getvalue(), "image/png"),))


def build_classifier(settings: TestStageSettings) -> GreenClassifier:
    return GreenClassifier(settings)


def build_captioner(settings: TestStageSettings) -> SizeCaptioner:
    return SizeCaptioner(settings)


def build_generator(settings: TestStageSettings) -> ThumbnailGenerator:
    return ThumbnailGenerator(settings)


BUILDERS = {"classifier": build_classifier, "captioner": build_captioner, "generator": build_generator}


def _stop_fetching_on_assign() -> None:
    on_assign = Runtime._on_assign

    def paused_on_assign(self, consumer, partitions):
        on_assign(self, consumer, partitions)
        consumer.assign(partitions)
        consumer.pause(partitions)

    Runtime._on_assign = paused_on_assign


if __name__ == "__main__":
    if TestStageSettings().stop_fetching:
        _stop_fetching_on_assign()
    raise SystemExit(main(BUILDERS[sys.argv[1]]))

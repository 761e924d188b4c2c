"""Small, real stages for testing the runtime: they read the photo from S3 through the shared
decoder, make a decision from its pixels and write a PNG, with no model.

Run one as a service: ``python tests/support/stages.py classifier|captioner|generator``.
``TEST_STAGE_SLEEP_S`` makes every job take that long (slow-job and crash tests);
``TEST_STAGE_DIE_ON_WIDTH`` makes the classifier kill its own process on a photo of that width, the
way a native crash in a decoder would; ``TEST_STAGE_STOP_FETCHING`` makes its Kafka client stop
fetching the partitions it is assigned (a stuck client).
"""

from __future__ import annotations

import io
import os
import signal
import sys
import time

from PIL import ImageStat

from deskgen.common.keys import generated_key
from deskgen.common.runtime import Runtime, serve
from deskgen.common.stage import Blob, Emit, Reject

_MODEL = {"name": "test-stage", "version": "1"}


def _pause() -> None:
    time.sleep(float(os.environ.get("TEST_STAGE_SLEEP_S", "0")))


class GreenClassifier:
    """A photo is a 'desk' when its green channel outweighs its red one."""

    name, consumes, produces, section = "classifier", "uploaded", "classified", "classification"
    batch_max = 4

    def load(self) -> None:
        pass

    def handle(self, event, blobs):
        _pause()
        image = blobs.image(event.data["image_key"])
        if str(image.width) == os.environ.get("TEST_STAGE_DIE_ON_WIDTH"):
            os.kill(os.getpid(), signal.SIGKILL)
        red, green, _ = ImageStat.Stat(image).mean
        score = green / max(red + green, 1e-6)
        section = {"label": "desk" if score >= 0.5 else "not_desk", "score": score, "threshold": 0.5,
                   "model": _MODEL, "inference_ms": 0.0, "evidence": []}
        return Emit(section) if score >= 0.5 else Reject("not_desk", f"score {score:.2f} < 0.5", section)


class SizeCaptioner:
    """Captions the photo with its size."""

    name, consumes, produces, section = "captioner", "classified", "captioned", "captioning"

    def load(self) -> None:
        pass

    def handle(self, event, blobs):
        _pause()
        image = blobs.image(event.data["image_key"])
        text = f"a photo of {image.width} by {image.height} pixels"
        return Emit({"captions": [{"prompt": "size", "text": text}], "keywords": [{"word": "photo", "count": 1}],
                     "prompt": text, "negative_prompt": "", "preset": event.data["request"].get("preset", "mix"),
                     "concept": event.data["request"].get("concept", "BASIC"), "model": _MODEL})


class ThumbnailGenerator:
    """'Generates' a 32×32 thumbnail of the photo and stores it as the job's PNG."""

    name, consumes, produces, section = "generator", "captioned", "generated", "output"

    def load(self) -> None:
        pass

    def handle(self, event, blobs):
        _pause()
        image = blobs.image(event.data["image_key"]).resize((32, 32))
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        preset = event.data["captioning"]["preset"]
        key = generated_key(event.job_id, preset)
        return Emit({"image_key": key, "preset": preset, "seed": 0, "steps": 0, "guidance": 0.0, "width": 32,
                     "height": 32, "scheduler": "none", "model": _MODEL},
                    blobs=(Blob(key, buffer.getvalue(), "image/png"),))


STAGES = {"classifier": GreenClassifier, "captioner": SizeCaptioner, "generator": ThumbnailGenerator}


def _stop_fetching_on_assign() -> None:
    on_assign = Runtime._on_assign

    def paused_on_assign(self, consumer, partitions):
        on_assign(self, consumer, partitions)
        consumer.assign(partitions)
        consumer.pause(partitions)

    Runtime._on_assign = paused_on_assign


if __name__ == "__main__":
    if os.environ.get("TEST_STAGE_STOP_FETCHING"):
        _stop_fetching_on_assign()
    raise SystemExit(serve(STAGES[sys.argv[1]]()))

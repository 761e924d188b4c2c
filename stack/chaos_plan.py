"""What one chaos run does: its options, the settings of its stage processes, and its jobs (the photo mix
and what each job's terminal result must say)."""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass
from datetime import datetime, timezone

from PIL import Image

from chaos_fleet import stages
from samples import draw_desk

__all__ = ["PARTITIONS", "Job", "Options", "make_jobs", "sample_photos", "service_env"]

PARTITIONS = 2
PRESETS = ("ott_3d", "mix", "dalle_only")
DESK_SEEDS = range(1, 9)


@dataclass(frozen=True)
class Options:
    """What one run does; the defaults are the full run (about 9 minutes on 2 cores)."""

    jobs: int = 300  # per phase
    kills: int = 100
    broker_restart: bool = True
    s3_outage_s: float = 30.0
    seed: int = 1
    kill_interval_s: float = 3.5  # mean time between kills: the fault window is kills × this
    baseline_rate: float = 2.5  # jobs/s in the fault-free phase
    drain_timeout_s: float = 180.0  # after the window: longer than any designed recovery, shorter than a hang

    @property
    def window_s(self) -> float:
        """Length of the chaos phase: long enough for the kills, the broker restart and the S3 outage."""
        needed = [self.kills * self.kill_interval_s, 2 * (self.s3_outage_s + 5)]
        if self.broker_restart:
            needed.append(50.0)  # stop at 20 % of the window, back and settled before the S3 outage at 50 %
        return max(needed)


def service_env(model_env: dict[str, str], options: Options) -> dict[str, str]:
    """Settings of every stage process: fast failure detection and retries that outlast the S3 outage."""
    return {
        **model_env,
        "DESKGEN_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "DESKGEN_KAFKA_TRANSACTION_TIMEOUT_MS": "10000",
        "DESKGEN_RETRY_BASE_MS": "200",
        "DESKGEN_RETRY_MAX_MS": "2000",
        "DESKGEN_RETRY_MAX_ATTEMPTS": str(10 + math.ceil(options.s3_outage_s)),  # ≤ 2 s apart: ~2× the outage
        "DESKGEN_S3_TIMEOUT_SECONDS": "2",
        "DESKGEN_CLASSIFIER_BACKEND": "torch",  # ready in ~3 s; the ONNX export would add ~3 s to every restart
        **{f"DESKGEN_{stage.name.upper()}_THREADS": "1" for stage in stages()},
    }


@dataclass
class Job:
    """One submitted photo and what its terminal result must say."""

    id: str
    phase: str
    kind: str  # desk | not_desk | corrupt
    photo: bytes
    ext: str
    preset: str
    published: float | None = None  # wall-clock time of the `uploaded` event

    def event(self, image_key: str) -> dict:
        uploaded_at = datetime.fromtimestamp(self.published, timezone.utc).isoformat(timespec="milliseconds")
        return {"job_id": self.id, "image_key": image_key, "uploaded_at": uploaded_at.replace("+00:00", "Z"),
                "request": {"preset": self.preset}, "timeline": {}}

    def unexpected(self, result: dict) -> str | None:
        """Why ``result`` is not this job's expected outcome, or None."""
        status, reason = result.get("status"), result.get("reason") or ""
        if self.kind == "desk":
            key = (result.get("output") or {}).get("image_key")
            ok = status == "succeeded" and key == f"generated/{self.id}/{self.preset}.png" \
                and isinstance(result["output"].get("products"), list)  # the captioner's recommender ran
        elif self.kind == "not_desk":
            ok = status == "rejected" and reason == "not_desk"
        else:
            ok = status == "rejected" and reason.startswith("image_")
        return None if ok else f"{self.kind} ended {status} {reason} {result.get('detail', '')[:120]}".strip()


def _encoded(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, quality=90)
    return buffer.getvalue()


def sample_photos() -> dict[str, list[tuple[bytes, str]]]:
    """(bytes, extension) per kind: drawn desks, scikit-image's coffee and rocket, and corrupt files."""
    from skimage import data

    desks = [(_encoded(draw_desk(seed=seed)), "jpg") for seed in DESK_SEEDS]
    not_desks = [(_encoded(Image.fromarray(getattr(data, name)())), "jpg") for name in ("coffee", "rocket")]
    corrupt = [(b"this is a text file with a .jpg name\n", "jpg"), (desks[0][0][: len(desks[0][0]) // 2], "jpg")]
    return {"desk": desks, "not_desk": not_desks, "corrupt": corrupt}


def make_jobs(phase: str, count: int, photos: dict[str, list[tuple[bytes, str]]], rng: random.Random) -> list[Job]:
    """``count`` jobs in random order: a couple of corrupt files, some non-desk photos, the rest desks."""
    corrupt, not_desk = max(2, round(count * 0.02)), max(2, round(count * 0.08))
    kinds = ["corrupt"] * corrupt + ["not_desk"] * not_desk + ["desk"] * max(0, count - corrupt - not_desk)
    rng.shuffle(kinds)
    jobs = []
    for number, kind in enumerate(kinds[:count]):
        photo, ext = rng.choice(photos[kind])
        jobs.append(Job(f"{phase}-{number:04d}-{kind}", phase, kind, photo, ext, rng.choice(PRESETS)))
    return jobs

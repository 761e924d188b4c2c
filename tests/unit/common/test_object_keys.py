"""Object keys and ids taken from events cannot leave the bucket or the job's prefix: the runtime
refuses them before any S3 call (no broker here: a recording store stands in for S3)."""

from __future__ import annotations

import threading

import pytest

from deskgen.common import keys
from deskgen.common.errors import InvalidInputError
from deskgen.common.events import Event
from deskgen.common.handling import Handler, JobBlobs
from deskgen.common.records import Item
from deskgen.common.retry import Backoff
from deskgen.common.settings import ImageSettings
from deskgen.common.stage import Blob, Emit, Stage
from support.malformed import UNSAFE_IMAGE_KEYS, UNSAFE_JOB_IDS

pytestmark = pytest.mark.hostile

JOB = "job-7"


class RecordingStore:
    """Counts what the runtime asks of S3."""

    def __init__(self):
        self.calls: list[tuple[str, str]] = []

    def put(self, key, data, content_type="application/octet-stream"):
        self.calls.append(("put", key))

    def get(self, key, *, max_bytes=None):
        self.calls.append(("get", key))
        return b""


class _Generator(Stage):
    name = "generator"

    def load(self):
        pass

    def handle(self, event, blobs):
        raise AssertionError("not called here")


def _handler(store) -> Handler:
    return Handler(_Generator(), store, ImageSettings(), Backoff(1, 0.01, 0.01), crashes=None, stop=threading.Event())


def _item() -> Item:
    event = Event(kind="captioned", id="e1", source="/tests", time="", data={"job_id": JOB})
    return Item(message=None, received="", event=event)


_OUTSIDE_THE_JOBS_OUTPUT = [
    "generated/other-job/mix.png",  # another job's output
    f"uploads/{JOB}/original.jpg",  # overwriting the user's own upload
    f"models/{JOB}/weights.safetensors",  # planting a model
    f"{JOB}/mix.png",
    f"generated/{JOB}/../../models/x",
    f"generated/{JOB}//mix.png",
    f"generated/{JOB}/./mix.png",
    f"/generated/{JOB}/mix.png",
    f"../generated/{JOB}/mix.png",
    f"generated/{JOB}/mix.png\n",
    f"generated\\{JOB}\\mix.png",
    "",
]


@pytest.mark.parametrize("key", _OUTSIDE_THE_JOBS_OUTPUT)
def test_the_runtime_writes_no_blob_outside_the_jobs_generated_prefix(key):
    store = RecordingStore()
    outcome = _handler(store)._write_blobs(_item(), Emit({}, blobs=(Blob(key, b"x"),)))
    assert isinstance(outcome, InvalidInputError) and outcome.reason == "invalid_object_key", outcome
    assert store.calls == []


def test_a_blob_under_the_jobs_generated_prefix_is_written():
    store = RecordingStore()
    outcome = _handler(store)._write_blobs(_item(), Emit({}, blobs=(Blob(f"generated/{JOB}/mix.png", b"x"),)))
    assert isinstance(outcome, Emit) and store.calls == [("put", f"generated/{JOB}/mix.png")]


@pytest.mark.parametrize("key", [k.replace("JOBID", JOB) for k in UNSAFE_IMAGE_KEYS]
                         + ["uploads/./x.jpg", f"uploads/{JOB}/", "uploads/a/\x00"])
def test_a_stage_cannot_read_an_object_outside_the_bucket(key):
    store = RecordingStore()
    with pytest.raises(InvalidInputError) as refused:
        JobBlobs(store, ImageSettings()).read(key)
    assert refused.value.reason == "invalid_object_key"
    assert store.calls == []


@pytest.mark.parametrize("job_id", [j.replace("JOBID", JOB) for j in UNSAFE_JOB_IDS])
def test_key_helpers_refuse_a_job_id_that_would_leave_its_prefix(job_id):
    for make in (lambda: keys.upload_key(job_id, "jpg"), lambda: keys.generated_key(job_id, "mix")):
        with pytest.raises(InvalidInputError) as refused:
            make()
        assert refused.value.reason == "invalid_job_id"


@pytest.mark.parametrize("preset", ["../x", "MIX", "mix/..", "mix\n", "", "a" * 33])
def test_generated_key_refuses_a_preset_that_would_leave_the_jobs_prefix(preset):
    with pytest.raises(InvalidInputError):
        keys.generated_key(JOB, preset)

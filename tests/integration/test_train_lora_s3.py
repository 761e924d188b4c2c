"""``deskgen train lora`` against the real S3 server: photos from a prefix, the adapter uploaded as a LoRA URI."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from PIL import Image

from deskgen.common.models import ModelSources, resolve
from deskgen.common.settings import S3Settings, load
from deskgen.services.generator.components import LORA_FILE, lora_file

pytestmark = pytest.mark.integration


def _photo(colour: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG")
    return buffer.getvalue()


def test_trains_from_an_s3_prefix_and_uploads_a_loadable_adapter(pipeline, dev_models, tmp_path):
    for i, (colour, size) in enumerate([((200, 30, 30), (96, 72)), ((20, 40, 200), (72, 96)),
                                        ((30, 160, 60), (120, 68))]):
        pipeline.store.put(f"training/desk/photo-{i}.jpg", _photo(colour, size))
        pipeline.store.put(f"training/desk/photo-{i}.txt", b"a desk in flat colour")
    pipeline.store.put("training/desk/broken.jpg", b"\xff\xd8\xff not a jpeg")
    target = f"s3://{pipeline.bucket}/adapters/desk/1"
    env = {**dev_models, "DESKGEN_MODEL_CACHE": str(tmp_path / "cache")}
    done = _train(["--data", f"s3://{pipeline.bucket}/training/desk", "--out", str(tmp_path / "out"), "--name",
                   "desk", "--rank", "4", "--steps", "3", "--resolution", "64", "--validation-steps", "0",
                   "--upload", target], env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "skipped broken.jpg: " in done.stdout and "3 photos (1 skipped)" in done.stdout
    fetched = lora_file(resolve(target, ModelSources(tmp_path / "fetched", load(S3Settings))))
    assert fetched.name == LORA_FILE
    assert fetched.read_bytes() == (tmp_path / "out" / LORA_FILE).read_bytes()


def _train(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deskgen.common.cli", "train", "lora", *args],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=600)


@pytest.mark.parametrize("extra, says", [
    (["--upload", "file:///tmp/adapters"], "--upload 'file:///tmp/adapters': use s3://bucket/prefix"),
    (["--caption-model", "file:///nowhere"], "1 photos have no caption file and the captioner cannot load"),
])
def test_bad_settings_stop_with_one_line_before_training(dev_models, tmp_path, extra, says):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(_photo((1, 2, 3), (80, 60)))
    done = _train(["--data", str(tmp_path / "photos"), "--out", str(tmp_path / "out"), "--steps", "1",
                   "--resolution", "64", *extra], dev_models)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr

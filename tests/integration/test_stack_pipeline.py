"""The test pipeline's backend side (stack/pipeline.py) stores each photo as the format it is."""

from __future__ import annotations

import io
import uuid

import pytest
from minio import Minio
from PIL import Image

import localstack
from support.hostile_images import GREEN, encode

pytestmark = pytest.mark.integration


@pytest.fixture
def topics(pipeline):
    pipeline.create_topics()
    return pipeline


def _stored(pipeline, job_id: str) -> tuple[str, str]:
    """The job's upload key and its stored content type."""
    (key,) = pipeline.store.list(f"uploads/{job_id}/")
    access_key, secret_key = localstack.s3_credentials()
    s3 = Minio(localstack.s3_endpoint(), access_key=access_key, secret_key=secret_key, secure=False)
    return key, s3.stat_object(pipeline.bucket, key).content_type


@pytest.mark.parametrize("fmt, ext, content_type", [("PNG", "png", "image/png"), ("WEBP", "webp", "image/webp"),
                                                    ("JPEG", "jpg", "image/jpeg"), ("HEIF", "heic", "image/heic"),
                                                    ("AVIF", "avif", "image/avif")])
def test_submit_stores_the_photo_under_its_own_format(topics, fmt, ext, content_type):
    job = topics.submit(encode(Image.new("RGB", (96, 64), GREEN), fmt))

    assert _stored(topics, job) == (f"uploads/{job}/original.{ext}", content_type)


def test_upload_takes_the_content_type_from_the_image_not_the_extension(pipeline):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "WEBP")
    job = uuid.uuid4().hex
    pipeline.upload(buffer.getvalue(), job, ext="jpg")

    assert _stored(pipeline, job) == (f"uploads/{job}/original.jpg", "image/webp")


def test_a_file_that_is_no_image_keeps_the_type_of_its_name(topics):
    job = topics.submit(b"not an image at all", ext="png")

    assert _stored(topics, job) == (f"uploads/{job}/original.png", "image/png")

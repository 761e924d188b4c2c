"""Object storage through the minio client, with errors sorted into transient and invalid input."""

from __future__ import annotations

import io

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from .errors import FatalError, InvalidInputError, TransientError
from .settings import S3Settings

__all__ = ["ObjectStore"]

_MISSING = {"NoSuchKey", "NoSuchObject"}
_AUTH = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


class ObjectStore:
    """One bucket of an S3 server. Keys are relative to the bucket."""

    def __init__(self, settings: S3Settings, *, bucket: str | None = None):
        access, secret = settings.credentials()
        timeout = urllib3.Timeout(connect=settings.timeout_seconds, read=settings.timeout_seconds)
        # One attempt per call: the runtime owns retries and their backoff.
        http = urllib3.PoolManager(timeout=timeout, retries=urllib3.Retry(total=0), maxsize=8)
        self._client = Minio(settings.endpoint, access_key=access, secret_key=secret,
                             secure=settings.secure, region=settings.region, http_client=http)
        self.bucket = bucket or settings.bucket
        self.endpoint = settings.endpoint

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist."""
        with _sorted_errors("create bucket", self.bucket):
            if not self._client.bucket_exists(self.bucket):
                self._client.make_bucket(self.bucket)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        with _sorted_errors("put", key):
            self._client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type)

    def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """The object's bytes. Raises InvalidInputError(object_missing | object_too_large)."""
        with _sorted_errors("get", key):
            if max_bytes is not None:
                size = self._client.stat_object(self.bucket, key).size
                if size > max_bytes:
                    raise InvalidInputError("image_too_large", f"{key}: {size} bytes exceeds {max_bytes}")
            response = self._client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def exists(self, key: str) -> bool:
        try:
            with _sorted_errors("stat", key):
                self._client.stat_object(self.bucket, key)
            return True
        except InvalidInputError:
            return False

    def list(self, prefix: str) -> list[str]:
        with _sorted_errors("list", prefix):
            return sorted(o.object_name for o in self._client.list_objects(self.bucket, prefix=prefix, recursive=True))


class _sorted_errors:
    """Turn minio/urllib3 exceptions into the project's error kinds."""

    def __init__(self, operation: str, key: str):
        self.operation, self.key = operation, key

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or isinstance(exc, (InvalidInputError, TransientError, FatalError)):
            return False
        where = f"S3 {self.operation} {self.key!r}"
        if isinstance(exc, S3Error):
            if exc.code in _MISSING or (exc.code == "NoSuchBucket" and self.operation in ("get", "stat")):
                raise InvalidInputError("object_missing", f"{where}: {exc.code}", status="failed") from None
            if exc.code in _AUTH:
                raise FatalError(f"{where}: {exc.code} — check the S3 credentials") from None
            raise TransientError(f"{where}: {exc.code}: {exc.message}") from exc
        if isinstance(exc, (MinioException, urllib3.exceptions.HTTPError, OSError)):
            raise TransientError(f"{where}: S3 unavailable ({type(exc).__name__}: {exc})") from exc
        return False

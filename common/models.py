"""Model sources: one loader that turns a model URI into a local, checked path.

Schemes:
  ``file:///abs/path``                  a local file or folder, used as is
  ``pkg://<package>/<path>``            a file or folder shipped inside an installed Python package
  ``s3://<bucket>/<prefix>``            every object under the prefix, downloaded into the cache
  ``hf://<org>/<name>[@<revision>]``    a Hugging Face Hub snapshot, downloaded into the cache
  ``hf://<org>/<name>[@<revision>]/<file>``  one file of a Hub repo (e.g. one LoRA of several), downloaded alone

A model's identity (``ModelCard``: name, version, uri, real or dev-random weights) is also decided here,
for every stage: dev weights carry ``DEV_MARKER`` in their folder, and every output says so.

Downloads land in ``<cache>/<scheme>/<...>`` and are written to a temporary folder first, then
renamed, with a manifest of sizes and SHA-256 digests; a cached copy is re-checked against the
manifest before use, so a torn or tampered download is fetched again rather than loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from .errors import FatalError
from .settings import RuntimeSettings, S3Settings, load

__all__ = ["ModelSources", "ModelCard", "HubRef", "DEV_MARKER", "DEV_WEIGHTS", "resolve", "identify",
           "mark_dev_weights", "dev_models_dir", "hub_ref"]

_MANIFEST = ".deskgen-manifest.json"
DEV_MARKER = "deskgen-dev-weights.json"
DEV_WEIGHTS = "dev-random"


@dataclass(frozen=True)
class ModelSources:
    """Where models come from: the download cache (``s3://``, ``hf://``) and the S3 server of ``s3://``.

    The default knows local sources only (``file://``, ``pkg://``, paths); a service passes
    ``ModelSources.load()``, read once at start-up.
    """

    cache_dir: Path | None = None
    s3: S3Settings | None = None

    @classmethod
    def load(cls) -> "ModelSources":
        return cls(load(RuntimeSettings).model_cache, load(S3Settings))


@dataclass(frozen=True)
class HubRef:
    """What an ``hf://`` URI names: a repo at a revision (None: the default branch), and one file in it or all."""

    repo_id: str
    revision: str | None = None
    filename: str | None = None


def hub_ref(uri: str) -> HubRef:
    """``hf://<org>/<name>[@<revision>][/<file>]`` parsed; FatalError when it names no ``org/name``."""
    org, _, rest = uri.removeprefix("hf://").partition("/")
    name, _, filename = rest.partition("/")
    name, _, revision = name.partition("@")
    if not org or not name:
        raise FatalError(f"model {uri!r}: an hf:// URI is hf://<org>/<name>[@<revision>][/<file>]")
    return HubRef(f"{org}/{name}", revision or None, filename.strip("/") or None)


@dataclass(frozen=True)
class ModelCard:
    """A model's identity in every output: ``name``, ``version``, ``uri``; ``weights`` is ``real`` or ``dev-random``."""

    name: str
    version: str
    uri: str
    weights: str = "real"

    def as_dict(self) -> dict[str, str]:
        """The output's ``model`` object."""
        return {"name": self.name, "version": self.version, "uri": self.uri}


def identify(uri: str, path: Path, *, name: str = "", version: str = "") -> ModelCard:
    """The card of the model ``uri`` resolved to ``path``.

    Args:
        name: the model's own name (e.g. from its checkpoint); default: ``org/name`` of an ``hf://`` URI, else
            the last segment of its path.
        version: the model's own version (a checkpoint's, a digest); default: the URI's ``@revision``, else
            ``dev-random-<size>-seed<seed>`` for dev weights, else ``unpinned``.
    """
    parsed = urlparse(uri)
    if parsed.scheme == "hf":
        ref = hub_ref(uri)
        default_name = ref.repo_id + (f"/{ref.filename}" if ref.filename else "")
        revision = ref.revision or ""
    else:
        repo, _, revision = (parsed.netloc + parsed.path).rstrip("/").partition("@")
        default_name = repo.rsplit("/", 1)[-1]
    dev = _dev_facts(path)
    if not version:
        version = revision or (f"{DEV_WEIGHTS}-{dev.get('size', '?')}-seed{dev.get('seed', 0)}" if dev is not None
                               else "unpinned")
    return ModelCard(name=name or default_name, version=version, uri=uri,
                     weights=DEV_WEIGHTS if dev is not None else "real")


def mark_dev_weights(out: Path, **facts: object) -> None:
    """Mark the folder ``out`` as dev weights (``facts``: size, seed, ...), so every output names them so."""
    (Path(out) / DEV_MARKER).write_text(json.dumps({"weights": DEV_WEIGHTS, **facts}, indent=2) + "\n")


def _dev_facts(path: Path) -> dict | None:
    """The dev marker's facts when ``path`` (a model folder) holds dev weights, else None."""
    marker = Path(path) / DEV_MARKER
    return json.loads(marker.read_text()) if marker.is_file() else None


def dev_models_dir() -> Path:
    """``DESKGEN_DEV_MODELS``: where dev weights are built."""
    return load(RuntimeSettings).dev_models.resolve()


def resolve(uri: str, sources: ModelSources = ModelSources()) -> Path:
    """Return a local path holding the model named by ``uri``.

    Raises:
        FatalError: unknown scheme, missing file, unreachable source; the message says which.
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("s3", "hf") and sources.cache_dir is None:
        raise FatalError(f"model {uri!r}: downloads need a model cache (DESKGEN_MODEL_CACHE)")
    cache = sources.cache_dir
    if parsed.scheme == "file":
        return _existing(Path(parsed.netloc + parsed.path), uri)
    if parsed.scheme == "pkg":
        return _from_package(parsed.netloc, parsed.path.lstrip("/"), uri)
    if parsed.scheme == "s3":
        return _from_s3(sources.s3, parsed.netloc, parsed.path.lstrip("/"),
                        cache / "s3" / parsed.netloc / parsed.path.lstrip("/"))
    if parsed.scheme == "hf":
        return _from_hub(uri, cache / "hf")
    if parsed.scheme == "" and uri:
        return _existing(Path(uri), uri)
    raise FatalError(f"unsupported model URI {uri!r}: use file://, pkg://, s3:// or hf://")


def _existing(path: Path, uri: str) -> Path:
    if not path.exists():
        raise FatalError(f"model {uri!r} not found at {path}")
    return path


def _from_package(package: str, relative: str, uri: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FatalError(f"model {uri!r}: Python package {package!r} is not installed")
    return _existing(Path(next(iter(spec.submodule_search_locations))) / relative, uri)


def _from_hub(uri: str, cache: Path) -> Path:
    """The snapshot of a repo, or only the one file the URI names (huggingface_hub checks and caches it)."""
    ref = hub_ref(uri)
    try:
        from huggingface_hub import hf_hub_download, snapshot_download

        if ref.filename:
            return Path(hf_hub_download(ref.repo_id, ref.filename, revision=ref.revision, cache_dir=cache))
        return Path(snapshot_download(ref.repo_id, revision=ref.revision, cache_dir=cache))
    except Exception as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (HF_HUB_OFFLINE=1 and it is not cached)" if offline else ""
        raise FatalError(f"cannot fetch {uri}{hint}: {type(exc).__name__}: {exc}. "
                         "Point the model setting at file:// or s3:// weights, or build dev weights "
                         "with `deskgen models build-dev`.") from None


def _from_s3(s3: S3Settings | None, bucket: str, prefix: str, target: Path) -> Path:
    if _verified(target):
        return target
    from .storage import ObjectStore

    if s3 is None:
        raise FatalError(f"model s3://{bucket}/{prefix}: no S3 settings (DESKGEN_S3_*) were given")
    store = ObjectStore(s3, bucket=bucket)
    keys = store.list(prefix)
    if not keys:
        raise FatalError(f"model s3://{bucket}/{prefix}: no objects under that prefix")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".partial-"))
    try:
        manifest = {}
        for key in keys:
            relative = key[len(prefix):].lstrip("/") or Path(key).name
            dest = staging / relative
            dest.parent.mkdir(parents=True, exist_ok=True)
            data = store.get(key)
            dest.write_bytes(data)
            manifest[relative] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        (staging / _MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _verified(folder: Path) -> bool:
    manifest_path = folder / _MANIFEST
    if not manifest_path.is_file():
        return False
    manifest = json.loads(manifest_path.read_text())
    for relative, expected in manifest.items():
        path = folder / relative
        if not path.is_file() or path.stat().st_size != expected["size"]:
            return False
        if hashlib.sha256(path.read_bytes()).hexdigest() != expected["sha256"]:
            return False
    return True

"""Helpers of the catalogue tests: the `deskgen products` CLI against a test pipeline, product files, polling."""

from __future__ import annotations

import json
import subprocess
import time
from functools import cache
from typing import TYPE_CHECKING

from pipeline import PYTHON, ROOT

if TYPE_CHECKING:
    from deskgen.common.catalogue.embedder import SentenceEmbedder

SAMPLE = ROOT / "stack" / "sample-catalogue.jsonl"


def products_cli(pipeline, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "deskgen.common.cli", "products", *args], env=pipeline.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def sample_products() -> list[dict]:
    return [json.loads(line) for line in SAMPLE.read_text().splitlines()]


@cache
def embedder() -> "SentenceEmbedder":
    """The real all-MiniLM-L6-v2 embedder, loaded once per process."""
    from deskgen.common.catalogue.embedder import SentenceEmbedder

    model = SentenceEmbedder()
    model.load()
    return model


def catalogue_of(embedder, products: list[dict], *, vectors: list | None = None):
    """A loaded ``Catalogue`` holding ``products``, after the published ``vectors`` (records) if given."""
    from deskgen.common.catalogue.index import Catalogue
    from deskgen.common.tables import Change

    catalogue = Catalogue(embedder)
    catalogue.load()
    table = catalogue.vector_table
    catalogue.apply_vectors([Change(r.key.decode(), r.value and table.decode(r.key.decode(), r.value, r.headers))
                             for r in vectors or []])
    catalogue.apply([Change(p["id"], p) for p in products])
    return catalogue


def write_products(path, products) -> str:
    path.write_text("".join(json.dumps(p) + "\n" for p in products))
    return str(path)


def poll(condition, timeout: float = 30.0, what: str = "condition") -> None:
    """Until ``condition()`` holds; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not met within {timeout:.0f} s"
        time.sleep(0.2)

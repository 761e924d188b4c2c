"""A fourth stage for the tests that show every consumer reads the topology from ``common/topology.py``:
registered for the length of a ``with`` block, then removed, so no other test sees it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deskgen.common import topology
from deskgen.common.topology import StageSpec

__all__ = ["TOY", "toy_stage", "build_dev"]

TOY = StageSpec(name="toy", consumes="sketched", produces="toyed", section="toy", module="deskgen.common.stage",
                settings="deskgen.services.toy.settings:ToySettings", devweights="support.toy_stage:build_dev",
                summary="The toy stage looked at the sketch.")


@contextmanager
def toy_stage(**changes) -> Iterator[StageSpec]:
    """Register ``TOY`` (with ``changes``) as the last stage; remove it on exit."""
    stage = topology.register(dataclasses.replace(TOY, **changes))
    try:
        yield stage
    finally:
        topology.unregister(stage.name)


def build_dev(out: Path, size: str = "tiny", *, arch: str = "paper", **options) -> Path:
    """The toy's dev weights: a file naming the size and architecture."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "weights.txt").write_text(f"{size} {arch}\n")
    return out

"""LoRA presets: named, weighted mixes of the service adapters, read from ``presets.json``.

``presets.json`` documents each preset; this module only loads and checks the table.
"""

from __future__ import annotations

import json
import math
import pathlib
from dataclasses import dataclass
from functools import cache

from deskgen.common.errors import FatalError

__all__ = ["Preset", "PresetTable", "load_presets", "evaluation_prompts", "PRESETS_FILE"]

PRESETS_FILE = pathlib.Path(__file__).with_name("presets.json")


@dataclass(frozen=True)
class Preset:
    """One adapter mix. ``mix`` lists (adapter, weight) in the table's adapter order, weights > 0."""

    name: str
    group: str
    mix: tuple[tuple[str, float], ...]

    @property
    def adapters(self) -> dict[str, float]:
        return dict(self.mix)


@dataclass(frozen=True)
class PresetTable:
    adapters: tuple[str, ...]
    presets: dict[str, Preset]

    def get(self, name: str) -> Preset | None:
        return self.presets.get(name)

    def names(self, group: str | None = None) -> list[str]:
        return [name for name, preset in self.presets.items() if group is None or preset.group == group]


@cache
def load_presets(path: pathlib.Path = PRESETS_FILE) -> PresetTable:
    """Read and check the preset table; FatalError names the first bad entry."""
    table = json.loads(pathlib.Path(path).read_text())
    adapters = tuple(table["adapters"])
    presets = {}
    for name, entry in table["presets"].items():
        weights = entry["adapters"]
        unknown = set(weights) - set(adapters)
        if unknown:
            raise FatalError(f"preset {name!r} uses unknown adapters {sorted(unknown)}; known: {list(adapters)}")
        if not weights or not all(isinstance(w, (int, float)) and math.isfinite(w) and 0 < w <= 2
                                  for w in weights.values()):
            raise FatalError(f"preset {name!r} needs at least one adapter, each weight in (0, 2]")
        if entry.get("group") not in ("seed", "concept"):
            raise FatalError(f"preset {name!r}: group must be 'seed' or 'concept'")
        mix = tuple((adapter, float(weights[adapter])) for adapter in adapters if adapter in weights)
        presets[name] = Preset(name=name, group=entry["group"], mix=mix)
    return PresetTable(adapters=adapters, presets=presets)


def evaluation_prompts(path: pathlib.Path = PRESETS_FILE) -> tuple[list[str], str]:
    """The seed's test prompts and its standard negative prompt."""
    evaluation = json.loads(pathlib.Path(path).read_text())["evaluation"]
    return list(evaluation["prompts"]), evaluation["negative_prompt"]

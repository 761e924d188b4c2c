"""LoRA presets: named, weighted mixes of the service adapters, read from ``presets.json``.

``presets.json`` documents each preset; this module only loads and checks the table, and says which presets
the configured adapters can serve (``base``, no adapter, always can).
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache

from deskgen.common.errors import FatalError

__all__ = ["Preset", "PresetTable", "load_presets", "evaluation_prompts", "PRESETS_FILE", "BASE_PRESET"]

PRESETS_FILE = pathlib.Path(__file__).with_name("presets.json")
BASE_PRESET = "base"


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

    def with_rows(self, adapters: Iterable[str], presets: Mapping[str, Mapping[str, float]]) -> PresetTable:
        """This table extended by the styles topic's rows (``styles.py``): their adapters after these, their
        presets (group ``table``) replacing these of the same name. An adapter a preset names but nobody
        published stays in its mix, so ``missing`` reports it."""
        order = tuple(dict.fromkeys((*self.adapters, *adapters, *(a for mix in presets.values() for a in mix))))
        merged = dict(self.presets)
        for name, weights in presets.items():
            merged[name] = Preset(name, "table", tuple((a, float(weights[a])) for a in order if a in weights))
        return PresetTable(order, merged)

    def missing(self, configured: Iterable[str]) -> dict[str, list[str]]:
        """Preset → the adapters it needs that are not ``configured``, for each preset that cannot run."""
        have = set(configured)
        return {name: missing for name, preset in self.presets.items()
                if (missing := [adapter for adapter, _ in preset.mix if adapter not in have])}


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
        if entry.get("group") not in ("base", "seed", "concept"):
            raise FatalError(f"preset {name!r}: group must be 'base', 'seed' or 'concept'")
        base = entry["group"] == "base"
        if base != (name == BASE_PRESET):
            raise FatalError(f"preset {name!r}: the group 'base' holds exactly the preset {BASE_PRESET!r}")
        if bool(weights) == base or not all(isinstance(w, (int, float)) and math.isfinite(w) and 0 < w <= 2
                                            for w in weights.values()):
            raise FatalError(f"preset {name!r} needs at least one adapter (none for {BASE_PRESET!r}), "
                             "each weight in (0, 2]")
        mix = tuple((adapter, float(weights[adapter])) for adapter in adapters if adapter in weights)
        presets[name] = Preset(name=name, group=entry["group"], mix=mix)
    if BASE_PRESET not in presets:
        raise FatalError(f"the preset table needs the preset {BASE_PRESET!r} (no adapters)")
    return PresetTable(adapters=adapters, presets=presets)


def evaluation_prompts(path: pathlib.Path = PRESETS_FILE) -> tuple[list[str], str]:
    """The seed's test prompts and its standard negative prompt."""
    evaluation = json.loads(pathlib.Path(path).read_text())["evaluation"]
    return list(evaluation["prompts"]), evaluation["negative_prompt"]

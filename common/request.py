"""The request section of an event (what the backend asked for), as far as code needs its vocabulary.

The schema (``schemas/defs.json``) is the one place the values are written; this module reads them.
"""

from __future__ import annotations

import json
from importlib.resources import files

__all__ = ["MODES", "DEFAULT_MODE"]

_MODE = json.loads((files("deskgen.common") / "schemas" / "defs.json").read_text())["$defs"]["mode"]
MODES: tuple[str, ...] = tuple(_MODE["enum"])
DEFAULT_MODE: str = _MODE["default"]

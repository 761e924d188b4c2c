"""The PromQL queries of the chart's Grafana dashboard, made concrete for a plain Prometheus.

Used by the chart tests and by the end-to-end test that scrapes the real services and checks
that every panel returns data.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = ["DASHBOARD", "GPU_METRIC", "panel_queries"]

DASHBOARD = Path(__file__).resolve().parents[2] / "helm" / "deskgen" / "dashboards" / "deskgen.json"
GPU_METRIC = "deskgen_gpu_memory_bytes"

_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def panel_queries(
    path: str | Path = DASHBOARD,
    *,
    rate_interval: str = "1m",
    include_gpu: bool = True,
) -> list[tuple[str, str]]:
    """Return (panel title, PromQL) for every target of every panel, in dashboard order.

    Grafana variables are replaced: ``$__rate_interval``/``$__interval`` by ``rate_interval``
    and ``$stage`` (a regex matcher) by ``.+``. With ``include_gpu=False`` the queries of the
    GPU-only metric are left out (they return nothing on a CPU machine).
    Raises ValueError when a query still holds a variable this function does not know.
    """
    dashboard = json.loads(Path(path).read_text())
    values = {"__rate_interval": rate_interval, "__interval": rate_interval, "stage": ".+"}
    queries = []
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            expr = target["expr"]
            if not include_gpu and GPU_METRIC in expr:
                continue
            queries.append((panel["title"], _substitute(expr, values)))
    return queries


def _panels(panels: list[dict]) -> list[dict]:
    flat = []
    for panel in panels:
        flat.append(panel)
        flat.extend(_panels(panel.get("panels", [])))  # panels nested in collapsed rows
    return flat


def _substitute(expr: str, values: dict[str, str]) -> str:
    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise ValueError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(replace, expr)

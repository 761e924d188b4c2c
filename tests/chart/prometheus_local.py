"""A Prometheus configuration for local runs: scrape given 127.0.0.1 targets, load the chart's alerts.

Used by the end-to-end test (real services, real Prometheus from Debian's package) and checked
with ``promtool check config`` by the chart tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

__all__ = ["ALERT_RULES", "prometheus_config", "write_prometheus_config"]

ALERT_RULES = Path(__file__).resolve().parents[2] / "helm" / "deskgen" / "rules" / "deskgen-alerts.yaml"


def prometheus_config(
    targets: dict[str, Iterable[str]],
    *,
    scrape_interval: str = "1s",
    rule_files: Iterable[Path] = (ALERT_RULES,),
) -> str:
    """Return the configuration text (JSON, which Prometheus reads as YAML).

    ``targets`` maps a job name (e.g. ``deskgen-classifier``) to ``host:port`` strings such as
    ``127.0.0.1:8081``; each job scrapes ``/metrics`` every ``scrape_interval``.
    """
    config = {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": scrape_interval,
        },
        "rule_files": [str(Path(path).resolve()) for path in rule_files],
        "scrape_configs": [
            {"job_name": job, "metrics_path": "/metrics", "static_configs": [{"targets": list(addresses)}]}
            for job, addresses in targets.items()
        ],
    }
    return json.dumps(config, indent=2) + "\n"


def write_prometheus_config(directory: Path, targets: dict[str, Iterable[str]], **options) -> Path:
    """Write ``prometheus.yml`` into ``directory`` and return its path (options as in prometheus_config)."""
    path = Path(directory) / "prometheus.yml"
    path.write_text(prometheus_config(targets, **options))
    return path

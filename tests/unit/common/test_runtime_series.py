"""The series the dashboard and the alerts select exist once a service has started, before any job: a rate
needs a sample from before an event, so no panel or alert may depend on when the first event is scraped."""

from __future__ import annotations

import re

import pytest
import yaml
from confluent_kafka import TopicPartition
from prometheus_client import REGISTRY

from chart.dashboard_queries import panel_queries
from chart.prometheus_local import ALERT_RULES
from deskgen.common.runtime import Runtime
from deskgen.common.settings import ImageSettings, KafkaSettings, RuntimeSettings, S3Settings
from deskgen.common.stage import Stage
from deskgen.common.storage import ObjectStore
from deskgen.common.topology import STAGES
from deskgen.services.captioner.settings import CaptionerSettings
from deskgen.services.captioner.stage import build_stage as build_captioner

_SELECTOR = re.compile(r"\b(deskgen_[a-z0-9_]+)\s*(\{[^}]*\})?")
_MATCHER = re.compile(r'(\w+)\s*(=~|=)\s*"([^"]*)"')
# Series of the captioner's catalogue (its table and its recommender): no other stage has them.
_CAPTIONER_ONLY = ("deskgen_recommend_seconds", "deskgen_catalogue_products", "deskgen_table_")


def _queries() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    return panel_queries(include_gpu=False) + [(r["alert"], r["expr"]) for g in rules for r in g["rules"]]


def _samples() -> list[tuple[str, dict[str, str]]]:
    return [(s.name, s.labels) for family in REGISTRY.collect() for s in family.samples]


class _Standin(Stage):
    def __init__(self, name: str):
        self.name = name


def _started(tmp_path) -> list[Runtime]:
    """Each registered stage's runtime as ``serve`` builds it (the captioner's real stage, with its catalogue),
    its partition assigned: the service has started and no job has come."""
    settings = RuntimeSettings(state_dir=tmp_path)
    store = ObjectStore(S3Settings(access_key="unused", secret_key="unused"))
    runtimes = []
    for name in STAGES:
        stage = build_captioner(CaptionerSettings()) if name == "captioner" else _Standin(name)
        runtime = Runtime(stage, runtime=settings, kafka=KafkaSettings(), store=store, images=ImageSettings())
        runtime._on_assign(None, [TopicPartition(settings.topic(stage.consumes), 0)])
        runtimes.append(runtime)
    return runtimes


@pytest.mark.parametrize(("title", "expr"), _queries(), ids=lambda v: v if len(v) < 40 else None)
def test_every_series_a_panel_or_alert_selects_exists_for_each_stage_before_the_first_job(title, expr, tmp_path):
    _started(tmp_path)
    samples = _samples()
    missing = []
    for name, matchers in _SELECTOR.findall(expr):
        wanted = [(label, op, value) for label, op, value in _MATCHER.findall(matchers)]
        stages = ["captioner"] if name.startswith(_CAPTIONER_ONLY) else list(STAGES)
        for stage in stages:
            found = any(sample == name and labels.get("stage") == stage and all(
                re.fullmatch(value, labels.get(label, "")) if op == "=~" else labels.get(label) == value
                for label, op, value in wanted) for sample, labels in samples)
            pinned = [value for label, op, value in wanted if label == "stage" and op == "="]
            if not found and (not pinned or stage in pinned):
                missing.append(f"{name}{matchers} for {stage}")
    assert not missing, f"{title}: no series before the first job: {missing}"

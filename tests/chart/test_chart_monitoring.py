"""Monitoring: the alert rules (promtool check and unit tests), the dashboard and its queries, checked
against the metrics the services export (metrics_contract.json)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from chart_env import CHART, FULLNAME, by_kind, run
from dashboard_queries import GPU_METRIC, panel_queries
from prometheus_local import ALERT_RULES, write_prometheus_config

HERE = Path(__file__).resolve().parent
CONTRACT = json.loads((HERE / "metrics_contract.json").read_text())

def test_prometheus_rule_embeds_the_alert_file_unchanged(render):
    rule = by_kind(render.objects("all-toggles-on"), "PrometheusRule")[FULLNAME]
    assert rule["spec"] == yaml.safe_load(ALERT_RULES.read_text())
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_alert_rules_pass_promtool_check(tools):
    assert "SUCCESS" in run(tools.promtool, "check", "rules", ALERT_RULES).stdout


def test_alert_rules_pass_their_promtool_unit_tests(tools):
    assert "SUCCESS" in run(tools.promtool, "test", "rules", HERE / "alerts_test.yaml").stdout


def test_every_alert_has_a_unit_test_that_fires_it():
    alerts = {rule["alert"] for group in yaml.safe_load(ALERT_RULES.read_text())["groups"] for rule in group["rules"]}
    fired = {
        case["alertname"]
        for test in yaml.safe_load((HERE / "alerts_test.yaml").read_text())["tests"]
        for case in test["alert_rule_test"] if case["exp_alerts"]
    }
    assert alerts == fired


def test_dashboard_configmap_carries_the_file_for_the_grafana_sidecar(render):
    configmap = by_kind(render.objects("all-toggles-on"), "ConfigMap")[f"{FULLNAME}-dashboard"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert json.loads(configmap["data"]["deskgen.json"]) == json.loads((CHART / "dashboards" / "deskgen.json").read_text())


def test_dashboard_has_the_required_panels():
    titles = [title for title, _ in panel_queries()]
    for needed in ("Stage latency p50 / p95 / p99", "End-to-end job latency p50 / p95", "Throughput by outcome",
                   "Terminal results by status", "Consumer lag", "Dead-letter rate", "Model load time", "GPU memory"):
        assert needed in titles
    quantiles = {expr.split(",")[0] for title, expr in panel_queries() if title.startswith("Stage latency")}
    assert quantiles == {"histogram_quantile(0.5", "histogram_quantile(0.95", "histogram_quantile(0.99"}


def test_gpu_panels_say_no_gpu_when_the_series_is_absent():
    """The GPU memory series exists only on CUDA: on a CPU the panel shows "no GPU", not an empty chart."""
    panels = json.loads((CHART / "dashboards" / "deskgen.json").read_text())["panels"]
    no_value = {p["title"]: p.get("fieldConfig", {}).get("defaults", {}).get("noValue") for p in panels}
    gpu = {p["title"] for p in panels if any(GPU_METRIC in t["expr"] for t in p.get("targets", []))}
    assert gpu and {title: no_value[title] for title in gpu} == {title: "no GPU" for title in gpu}
    assert "no GPU" not in {no_value[title] for title in set(no_value) - gpu}


def test_panel_queries_are_concrete_and_can_leave_out_gpu_metrics():
    queries = panel_queries(rate_interval="2m")
    assert queries and all("$" not in expr for _, expr in queries)
    assert any("[2m]" in expr for _, expr in queries)
    assert [q for q in queries if GPU_METRIC not in q[1]] == panel_queries(rate_interval="2m", include_gpu=False)


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(deskgen_[a-z0-9_]+)", expr))


def _contract_name(series: str) -> str:
    metrics = CONTRACT["metrics"]
    if series in metrics:
        return series
    base, _, suffix = series.rpartition("_")
    assert suffix in {"bucket", "sum", "count"} and metrics.get(base, {}).get("type") == "histogram", f"{series} is not exported"
    return base


def _all_queries() -> list[tuple[str, str]]:
    rules = [(rule["alert"], rule["expr"]) for group in yaml.safe_load(ALERT_RULES.read_text())["groups"] for rule in group["rules"]]
    return panel_queries() + rules


@pytest.mark.parametrize(("title", "expr"), _all_queries(), ids=lambda v: v if len(v) < 40 else None)
def test_dashboard_and_alert_queries_use_only_exported_metrics_and_labels(title, expr):
    names = {_contract_name(series) for series in _metric_names(expr)}
    assert names, f"{title}: no deskgen metric"
    labels = set(CONTRACT["scrape_labels"]) | {"le"}
    for name in names:
        labels |= set(CONTRACT["metrics"][name]["labels"])
    used = set()
    for group in re.findall(r"\bby\s*\(([^)]*)\)", expr):
        used |= {label.strip() for label in group.split(",") if label.strip()}
    used |= set(re.findall(r"\b([a-z_]+)\s*(?:=~|!=|!~|=)\s*\"", expr))
    assert used <= labels, f"{title}: labels {used - labels} are not on {names}"


def test_dashboard_queries_are_valid_promql(tools, tmp_path):
    """promtool parses every panel query (as recording rules) the way Prometheus will."""
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"deskgen:panel_{i}", "expr": expr} for i, (_, expr) in enumerate(panel_queries())]}]}
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    assert f"SUCCESS: {len(rules['groups'][0]['rules'])} rules found" in run(tools.promtool, "check", "rules", path).stdout


def test_local_prometheus_config_passes_promtool(tools, tmp_path):
    config = write_prometheus_config(tmp_path, {"deskgen-classifier": ["127.0.0.1:18081"], "deskgen-generator": ["127.0.0.1:18083"]})
    loaded = yaml.safe_load(config.read_text())
    assert loaded["global"]["scrape_interval"] == "1s" and loaded["rule_files"] == [str(ALERT_RULES)]
    assert "SUCCESS" in run(tools.promtool, "check", "config", config).stdout

"""The chart reads the topology from topology.yaml, which `deskgen topology` writes from common/topology.py:
no drift, no template that names a kind, and a fourth stage registered there renders with no edit to the
chart (only its values block, like every stage's)."""

from __future__ import annotations

import re
import shutil

import pytest
import yaml

from chart_env import CHART, FULLNAME, KUBE_VERSIONS, NAMESPACE, RELEASE, ROOT, by_kind, container, run
from deskgen.common import topology
from support.toy_stage import TOY, toy_stage


def test_the_chart_topology_file_is_the_registry():
    """helm/deskgen/topology.yaml is what `deskgen topology` prints from common/topology.py."""
    assert (ROOT / topology.CHART_FILE).read_text() == topology.chart_yaml(), \
        f"{topology.CHART_FILE} differs from common/topology.py: run `deskgen topology > {topology.CHART_FILE}`"


def test_no_template_writes_the_stage_to_topic_map():
    """Templates read the stages and kinds from topology.yaml; none names a kind itself."""
    kinds = set(topology.event_kinds())
    for template in (CHART / "templates").rglob("*"):
        if template.is_file():
            words = set(re.findall(r"[a-z]+", template.read_text()))
            assert not words & kinds, f"{template.relative_to(CHART)} names {sorted(words & kinds)}"


@pytest.fixture
def toy_chart(tmp_path):
    """A copy of the chart whose topology.yaml is regenerated with the toy stage registered."""
    chart = tmp_path / "deskgen"
    shutil.copytree(CHART, chart)
    with toy_stage():
        (chart / "topology.yaml").write_text(topology.chart_yaml())
    return chart


def _template(tools, chart, *args):
    return run(tools.helm, "template", RELEASE, chart, "--namespace", NAMESPACE, "--kube-version", KUBE_VERSIONS[-1],
               *args, check=False)


def test_a_fourth_stage_renders_with_no_edit_to_the_chart(tools, toy_chart, tmp_path):
    block = yaml.safe_load((CHART / "values.yaml").read_text())["classifier"]
    del block["threads"]  # the classifier's own key; the toy has the shared stage keys only
    block["image"]["repository"] = "deskgen/toy"
    values = tmp_path / "toy-values.yaml"
    values.write_text(yaml.safe_dump({TOY.name: block}))
    done = _template(tools, toy_chart, "-f", values, "--set", "toy.autoscaling.enabled=true",
                     "--set", "metrics.serviceMonitor.enabled=true,networkPolicy.enabled=true")
    assert done.returncode == 0, done.stderr
    objects = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    name = f"{FULLNAME}-{TOY.name}"
    toy = container(by_kind(objects, "Deployment")[name])
    assert toy["command"] == ["deskgen", "run", TOY.name] and toy["image"].startswith("deskgen/toy:")
    assert name in by_kind(objects, "Service") and name in by_kind(objects, "PodDisruptionBudget")
    (trigger,) = by_kind(objects, "ScaledObject")[name]["spec"]["triggers"]
    assert (trigger["metadata"]["topic"], trigger["metadata"]["consumerGroup"]) == (f"deskgen.{TOY.consumes}", "deskgen-toy")
    monitored = by_kind(objects, "ServiceMonitor")[FULLNAME]["spec"]["selector"]["matchExpressions"][0]["values"]
    assert monitored == [*topology.STAGES, TOY.name]
    allowed = by_kind(objects, "NetworkPolicy")[FULLNAME]["spec"]["podSelector"]["matchExpressions"][0]["values"]
    assert TOY.name in allowed
    (test_pod,) = by_kind(objects, "Pod")[f"{FULLNAME}-test"]["spec"]["containers"]
    (check,) = [line for line in test_pod["command"][2].splitlines() if "for kind in" in line]
    assert f'"{TOY.consumes}","{TOY.produces}"' in check


def test_a_stage_without_a_values_block_is_refused_by_name(tools, toy_chart):
    done = _template(tools, toy_chart)
    assert done.returncode != 0
    assert "topology.yaml names the stage toy but the values have no toy block" in done.stderr

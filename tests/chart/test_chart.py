"""The Helm chart as a whole, checked with the real tools (no cluster): the pinned tools, lint, render,
kubernetes-validate --strict (bundled 1.28 and 1.34 schemas), hand-written subsets of the KEDA and
prometheus-operator CRD schemas, naming, NOTES. The stages, monitoring and values have their own files.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import jsonschema
import pytest
import yaml

from chart_env import (CHART, FULLNAME, KUBE_VERSIONS, RELEASE, SCENARIOS, STAGES, by_kind, container, load_values, run,
                       stage_deployments)

HERE = Path(__file__).resolve().parent
CRD_SCHEMAS = {path.stem: json.loads(path.read_text()) for path in (HERE / "crds").glob("*.json")}
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}
# --set values that switch on every custom resource the chart can render.
CUSTOM_RESOURCES_ON = (*(f"{stage}.autoscaling.enabled=true" for stage in STAGES),
                       "metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true")



# ---- tools -------------------------------------------------------------------------------------


def test_tools_are_the_pinned_versions_and_bundle_the_target_kubernetes_schemas(tools):
    assert re.search(r"helm\.sh/helm/v3\s+v3\.22\.0\s", run("go", "version", "-m", tools.helm).stdout)
    assert run(tools.kubernetes_validate, "--version").stdout.strip() == "1.37.0"
    bundled = next(tools.kubernetes_validate.parents[1].glob("lib/python*/site-packages/kubernetes_validate/kubernetes-json-schema"))
    for version in KUBE_VERSIONS:
        assert (bundled / f"v{version}-local-strict").is_dir(), f"kubernetes-validate lacks strict schemas for {version}"


# ---- lint and render ---------------------------------------------------------------------------


@pytest.mark.parametrize("values", ["(chart defaults)"] + SCENARIOS)
def test_helm_lint_strict_passes(tools, values):
    args = [] if values == "(chart defaults)" else ["-f", CHART / "ci" / f"{values}-values.yaml"]
    for version in KUBE_VERSIONS:
        out = run(tools.helm, "lint", "--strict", "--kube-version", version, CHART, *args).stdout
        assert "0 chart(s) failed" in out
        assert "[WARNING]" not in out and "[ERROR]" not in out, out


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_manifests_pass_kubernetes_validate_strict(tools, render, tmp_path, scenario, kube_version):
    manifest = tmp_path / f"{scenario}.yaml"
    manifest.write_text(render.text(scenario, kube_version))
    done = run(tools.kubernetes_validate, "--strict", "--kubernetes-version", kube_version, manifest, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    objects = render.objects(scenario, kube_version)
    core = [o for o in objects if o["kind"] not in CUSTOM_KINDS]
    passed = re.findall(r"^INFO .* passed for resource", done.stdout, re.M)
    assert len(passed) == len(core), done.stdout
    unknown = re.findall(r"Couldn't find schema for kind (\w+)", done.stdout)
    assert set(unknown) <= CUSTOM_KINDS, f"kinds nobody validates: {set(unknown) - CUSTOM_KINDS}"


def test_kubernetes_validate_strict_rejects_an_unknown_field(tools, render, tmp_path):
    """Negative control: the validator really checks what the chart renders."""
    objects = render.objects("default")
    container(stage_deployments(objects)["classifier"])["livenessProbes"] = {}
    manifest = tmp_path / "broken.yaml"
    manifest.write_text(yaml.safe_dump_all(objects))
    done = run(tools.kubernetes_validate, "--strict", "-k", KUBE_VERSIONS[0], manifest, check=False)
    assert done.returncode != 0 and "livenessProbes" in done.stdout


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_custom_resources_match_the_crd_schema_subsets(render, scenario):
    """Every scenario with every custom resource switched on: a scenario that rendered none would check nothing."""
    kafka = load_values(scenario)["kafka"]
    expected = {"ScaledObject", "ServiceMonitor", "PrometheusRule"}
    if kafka["securityProtocol"].startswith("SASL_") or (kafka["securityProtocol"].endswith("SSL") and kafka["tls"]["caSecret"]):
        expected.add("TriggerAuthentication")  # KEDA needs the Kafka credentials
    checked = set()
    for obj in render.objects(scenario, KUBE_VERSIONS[-1], *CUSTOM_RESOURCES_ON):
        if obj["kind"] in CUSTOM_KINDS:
            group_version = obj["apiVersion"].replace("/", "_")
            jsonschema.Draft202012Validator(CRD_SCHEMAS[f"{group_version}_{obj['kind']}"]).validate(obj)
            checked.add(obj["kind"])
    assert checked == expected


def test_crd_schema_subsets_reject_what_the_crds_reject(render):
    scaled = by_kind(render.objects("all-toggles-on"), "ScaledObject")[f"{FULLNAME}-generator"]
    scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 3  # KEDA metadata is a string map
    schema = CRD_SCHEMAS["keda.sh_v1alpha1_ScaledObject"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, schema)
    del scaled["spec"]["triggers"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, schema)


def test_every_toggle_on_renders_the_expected_objects(render):
    rendered = Counter((o["kind"], o["metadata"]["name"]) for o in render.objects("all-toggles-on"))
    expected = Counter({
        ("ServiceAccount", FULLNAME): 1,
        ("Secret", f"{FULLNAME}-kafka"): 1,
        ("Secret", f"{FULLNAME}-s3"): 1,
        ("Secret", f"{FULLNAME}-topics"): 1,
        ("NetworkPolicy", FULLNAME): 1,
        ("Job", f"{FULLNAME}-topics"): 1,
        ("Job", f"{FULLNAME}-minio-bucket"): 1,
        ("Deployment", f"{FULLNAME}-minio"): 1,
        ("Service", f"{FULLNAME}-minio"): 1,
        ("PersistentVolumeClaim", f"{FULLNAME}-minio"): 1,
        ("PersistentVolumeClaim", f"{FULLNAME}-classifier-model-cache"): 1,
        ("PersistentVolumeClaim", f"{FULLNAME}-generator-model-cache"): 1,
        ("TriggerAuthentication", f"{FULLNAME}-kafka"): 1,
        ("ServiceMonitor", FULLNAME): 1,
        ("PrometheusRule", FULLNAME): 1,
        ("ConfigMap", f"{FULLNAME}-dashboard"): 1,
        ("Pod", f"{FULLNAME}-test"): 1,  # the `helm test` hook
    })
    for stage in STAGES:
        for kind in ("Deployment", "Service", "PodDisruptionBudget", "ScaledObject"):
            expected[(kind, f"{FULLNAME}-{stage}")] += 1
    assert rendered == expected


def test_defaults_render_only_the_core_objects(render):
    kinds = Counter(o["kind"] for o in render.objects("default"))
    assert kinds == Counter({"Deployment": 3, "Service": 3, "PodDisruptionBudget": 3, "ServiceAccount": 1, "NetworkPolicy": 1, "Job": 1,
                             "Pod": 1})  # the Pod is the `helm test` hook


def test_every_object_is_named_and_labelled_by_the_helpers(render):
    for obj in render.objects("all-toggles-on"):
        labels = obj["metadata"]["labels"]
        assert obj["metadata"]["name"].startswith(FULLNAME)
        assert labels["app.kubernetes.io/part-of"] == "deskgen" and labels["app.kubernetes.io/instance"] == RELEASE
    defined = re.findall(r'define "([^"]+)"', (CHART / "templates" / "_helpers.tpl").read_text())
    assert defined and all(name.startswith("deskgen.") for name in defined)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_notes_render(tools, tmp_path, scenario):
    """NOTES.txt renders (helm template skips it): wrapped into a ConfigMap of a chart copy."""
    chart = tmp_path / "deskgen"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "notes-as-configmap.yaml").write_text(
        '{{- define "notes.text" }}' + notes + "{{ end }}\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: |\n"
        '    {{- include "notes.text" . | nindent 4 }}\n'
    )
    text = run(tools.helm, "template", RELEASE, chart, "--kube-version", KUBE_VERSIONS[-1],
               "-f", CHART / "ci" / f"{scenario}-values.yaml", "--show-only", "templates/notes-as-configmap.yaml").stdout
    rendered = yaml.safe_load(text)["data"]["notes"]
    stage_lines = [line.split(":")[0].strip() for line in rendered.splitlines() if "consumes deskgen." in line]
    assert stage_lines == list(STAGES), rendered
    assert "classifier: consumes deskgen.uploaded as group deskgen-classifier" in rendered

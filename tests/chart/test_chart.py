"""The Helm chart, its images, alerts and dashboard, checked with the real tools (no cluster).

helm lint/template (v3.22.0), kubernetes-validate --strict (bundled 1.28 and 1.34 schemas),
hand-written subsets of the KEDA and prometheus-operator CRD schemas, promtool and hadolint.
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

from chart_env import CHART, KUBE_VERSIONS, RELEASE, ROOT, SCENARIOS, run
from dashboard_queries import GPU_METRIC, panel_queries
from prometheus_local import ALERT_RULES, write_prometheus_config

HERE = Path(__file__).resolve().parent
CONTRACT = json.loads((HERE / "metrics_contract.json").read_text())
CRD_SCHEMAS = {path.stem: json.loads(path.read_text()) for path in (HERE / "crds").glob("*.json")}
STAGES = {"classifier": "uploaded", "captioner": "classified", "generator": "captioned"}
FULLNAME = f"{RELEASE}-deskgen"
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}
# --set values that switch on every custom resource the chart can render.
CUSTOM_RESOURCES_ON = (*(f"{stage}.autoscaling.enabled=true" for stage in STAGES),
                       "metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true")
STAGE_ENV = {
    "DESKGEN_KAFKA_BOOTSTRAP_SERVERS", "DESKGEN_KAFKA_SECURITY_PROTOCOL", "DESKGEN_KAFKA_SASL_MECHANISM",
    "DESKGEN_KAFKA_SASL_USERNAME", "DESKGEN_KAFKA_SASL_PASSWORD", "DESKGEN_KAFKA_SSL_CA_LOCATION",
    "DESKGEN_TOPIC_PREFIX", "DESKGEN_KAFKA_GROUP_PREFIX", "DESKGEN_S3_ENDPOINT", "DESKGEN_S3_ACCESS_KEY", "DESKGEN_S3_SECRET_KEY",
    "DESKGEN_S3_BUCKET", "DESKGEN_S3_SECURE", "DESKGEN_S3_REGION", "DESKGEN_HTTP_HOST", "DESKGEN_HTTP_PORT",
    "DESKGEN_MODEL_CACHE", "DESKGEN_INSTANCE_ID", "DESKGEN_SHUTDOWN_GRACE_SECONDS",
    "DESKGEN_CLASSIFIER_MODEL", "DESKGEN_CLASSIFIER_THREADS", "DESKGEN_CAPTIONER_MODEL",
    "DESKGEN_CAPTIONER_THREADS", "DESKGEN_CAPTIONER_DEVICE", "DESKGEN_GENERATOR_MODEL",
    "DESKGEN_GENERATOR_LORA_DALLE", "DESKGEN_GENERATOR_LORA_OTT", "DESKGEN_GENERATOR_LORA_3D",
    "DESKGEN_GENERATOR_DEVICE",
    "HOME", "HF_HOME",  # writable home and hub cache on the mounted volumes
}
SECRET_ENV = {"DESKGEN_KAFKA_SASL_USERNAME", "DESKGEN_KAFKA_SASL_PASSWORD", "DESKGEN_S3_ACCESS_KEY", "DESKGEN_S3_SECRET_KEY"}


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def stage_deployments(objects: list[dict]) -> dict[str, dict]:
    deployments = by_kind(objects, "Deployment")
    return {stage: deployments[f"{FULLNAME}-{stage}"] for stage in STAGES if f"{FULLNAME}-{stage}" in deployments}


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env_of(deployment: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container(deployment)["env"]}


def load_values(scenario: str) -> dict:
    """The chart defaults merged with the scenario's values file (maps merge, lists replace)."""

    def merge(base: dict, override: dict) -> dict:
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        return merged

    return merge(yaml.safe_load((CHART / "values.yaml").read_text()), yaml.safe_load((CHART / "ci" / f"{scenario}-values.yaml").read_text()) or {})


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


# ---- the stage workloads -----------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_stage_deployments_follow_the_service_contract(render, scenario):
    values = load_values(scenario)
    extra_env = {e["name"] for e in values["env"]}
    deployments = stage_deployments(render.objects(scenario))
    assert set(deployments) == set(STAGES)
    for stage, deployment in deployments.items():
        spec = deployment["spec"]["template"]["spec"]
        main = container(deployment)
        env = env_of(deployment)
        assert main["command"] == ["deskgen", "run", stage]
        assert set(env) - extra_env <= STAGE_ENV, f"{stage}: env outside the contract: {set(env) - extra_env - STAGE_ENV}"
        assert env["DESKGEN_INSTANCE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        assert (env["DESKGEN_HTTP_HOST"]["value"], env["DESKGEN_HTTP_PORT"]["value"]) == ("0.0.0.0", "8080")
        assert env["DESKGEN_TOPIC_PREFIX"]["value"] == values["topics"]["prefix"]
        assert env["DESKGEN_KAFKA_GROUP_PREFIX"]["value"] == values["kafka"]["groupPrefix"]
        assert "HF_HUB_OFFLINE" not in env
        for name in SECRET_ENV & set(env):
            assert set(env[name]) == {"name", "valueFrom"} and "secretKeyRef" in env[name]["valueFrom"], name
        assert main["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
        assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        startup = main["startupProbe"]
        assert startup["httpGet"]["path"] == "/healthz"
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, f"{stage}: startup budget under 5 min"
        grace = int(env["DESKGEN_SHUTDOWN_GRACE_SECONDS"]["value"])
        assert spec["terminationGracePeriodSeconds"] > grace
        mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
        assert mounts["tmp"] == "/tmp" and mounts["model-cache"] == env["DESKGEN_MODEL_CACHE"]["value"]
        assert main["securityContext"]["readOnlyRootFilesystem"] is True
        assert main["securityContext"]["allowPrivilegeEscalation"] is False
        assert main["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["serviceAccountName"] == FULLNAME and spec["automountServiceAccountToken"] is False
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert set(selector) == {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}
        assert selector["app.kubernetes.io/component"] == stage
    graces = {stage: d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] for stage, d in deployments.items()}
    assert max(graces, key=graces.get) == "generator"


def test_generator_gets_a_gpu_and_gpu_placement_by_default(render):
    deployments = stage_deployments(render.objects("default"))
    generator = deployments["generator"]["spec"]["template"]["spec"]
    assert container(deployments["generator"])["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert env_of(deployments["generator"])["DESKGEN_GENERATOR_DEVICE"]["value"] == "cuda"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in generator["tolerations"]
    terms = generator["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["key"] == "nvidia.com/gpu.present"
    for stage in ("classifier", "captioner"):
        spec = deployments[stage]["spec"]["template"]["spec"]
        assert "nvidia.com/gpu" not in container(deployments[stage])["resources"].get("limits", {})
        assert "tolerations" not in spec and "affinity" not in spec
    assert env_of(deployments["captioner"])["DESKGEN_CAPTIONER_DEVICE"]["value"] == "cpu"
    assert env_of(deployments["classifier"])["DESKGEN_CLASSIFIER_THREADS"]["value"] == "2"


def test_gpu_captioner_scenario_moves_the_captioner_to_gpu_nodes(render):
    captioner = stage_deployments(render.objects("gpu-captioner"))["captioner"]
    spec = captioner["spec"]["template"]["spec"]
    assert container(captioner)["resources"]["limits"] == {"memory": "8Gi", "nvidia.com/gpu": 1}
    assert env_of(captioner)["DESKGEN_CAPTIONER_DEVICE"]["value"] == "cuda"
    assert spec["nodeSelector"] == {"cloud.example.com/gpu-pool": "inference"}
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_existing_secrets_are_referenced_and_no_secret_is_created(render):
    objects = render.objects("existing-secrets")
    assert not by_kind(objects, "Secret")
    for deployment in [*stage_deployments(objects).values(), by_kind(objects, "Job")[f"{FULLNAME}-topics"]]:
        pod = deployment["spec"]["template"]["spec"]
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["DESKGEN_KAFKA_SASL_USERNAME"]["valueFrom"]["secretKeyRef"] == {"name": "kafka-deskgen-user", "key": "user"}
        assert env["DESKGEN_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "kafka-deskgen-user", "key": "pass"}
        assert env["DESKGEN_KAFKA_SSL_CA_LOCATION"]["value"] == "/etc/deskgen/kafka-ca/ca.crt"
        assert {"name": "kafka-ca", "secret": {"secretName": "kafka-cluster-ca-cert", "items": [{"key": "ca.crt", "path": "ca.crt"}]}} in pod["volumes"]
        if "DESKGEN_S3_ACCESS_KEY" in env:
            assert env["DESKGEN_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "deskgen-s3-credentials", "key": "AWS_ACCESS_KEY_ID"}
            assert env["DESKGEN_S3_SECURE"]["value"] == "true"
    auth = by_kind(objects, "TriggerAuthentication")[f"{FULLNAME}-kafka"]["spec"]["secretTargetRef"]
    assert {(r["parameter"], r["name"], r["key"]) for r in auth} == {
        ("username", "kafka-deskgen-user", "user"), ("password", "kafka-deskgen-user", "pass"), ("ca", "kafka-cluster-ca-cert", "ca.crt")}


def test_topics_hook_creates_topics_with_the_configured_partitions(render):
    objects = render.objects("all-toggles-on")
    job = by_kind(objects, "Job")[f"{FULLNAME}-topics"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert container(job)["command"] == ["deskgen", "topics", "create", "--partitions", "12", "--replication", "3"]
    hook_secret = by_kind(objects, "Secret")[f"{FULLNAME}-topics"]
    assert hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"] < job["metadata"]["annotations"]["helm.sh/hook-weight"]
    assert "serviceAccountName" not in job["spec"]["template"]["spec"], "the release's ServiceAccount does not exist at pre-install"


def test_keda_scales_each_stage_on_the_lag_of_its_own_topic_and_group(render):
    objects = render.objects("all-toggles-on")
    deployments = stage_deployments(objects)
    for stage, topic in STAGES.items():
        scaled = by_kind(objects, "ScaledObject")[f"{FULLNAME}-{stage}"]["spec"]
        (trigger,) = scaled["triggers"]
        assert scaled["scaleTargetRef"]["name"] == deployments[stage]["metadata"]["name"]
        assert trigger["type"] == "kafka"
        assert (trigger["metadata"]["topic"], trigger["metadata"]["consumerGroup"]) == (f"deskgen.{topic}", f"deskgen-{stage}")
        assert trigger["authenticationRef"]["name"] in by_kind(objects, "TriggerAuthentication")
        assert "replicas" not in deployments[stage]["spec"], "KEDA owns the replica count"
        assert scaled["maxReplicaCount"] <= 12 or trigger["metadata"]["allowIdleConsumers"] == "true"


def test_one_value_names_the_consumer_groups_of_the_stages_and_of_keda(render):
    objects = render.objects("all-toggles-on", KUBE_VERSIONS[-1], "kafka.groupPrefix=shop-")
    for stage, deployment in stage_deployments(objects).items():
        assert env_of(deployment)["DESKGEN_KAFKA_GROUP_PREFIX"]["value"] == "shop-"
        (trigger,) = by_kind(objects, "ScaledObject")[f"{FULLNAME}-{stage}"]["spec"]["triggers"]
        assert trigger["metadata"]["consumerGroup"] == f"shop-{stage}"
    for entry in ("env[0].name=DESKGEN_KAFKA_GROUP_PREFIX", "generator.env[0].name=DESKGEN_KAFKA_GROUP_PREFIX"):
        assert "set kafka.groupPrefix instead" in render.fails(entry, f"{entry.split('.name')[0]}.value=x-")


def test_autoscaling_beyond_the_partitions_is_refused_unless_allowed(render):
    error = render.fails("classifier.autoscaling.enabled=true", "classifier.autoscaling.maxReplicaCount=13")
    assert "exceeds topics.partitions (12)" in error
    allowed = render.objects("default", KUBE_VERSIONS[-1], "classifier.autoscaling.enabled=true",
                             "classifier.autoscaling.maxReplicaCount=13", "classifier.autoscaling.allowAbovePartitions=true")
    assert by_kind(allowed, "ScaledObject")[f"{FULLNAME}-classifier"]["spec"]["maxReplicaCount"] == 13


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["classifier.typo=1"], "/classifier/typo"),
        (["generator.device=gpu"], "/generator/device"),
        (["kafka.securityProtocol=SASL"], "/kafka/securityProtocol"),
        (["kafka.bootstrapServers=kafka"], "/kafka/bootstrapServers"),
        (["captioner.model=Salesforce/blip"], "/captioner/model"),
        (["topics.partitions=0"], "/topics/partitions"),
        (["captioner.modelCache.type=hostPath"], "/captioner/modelCache/type"),
        (["kafka.securityProtocol=SASL_SSL"], "kafka.sasl.existingSecret or kafka.sasl.username"),
        (["s3.existingSecret="], "s3.existingSecret or s3.accessKey"),
        (["s3.endpoint="], "s3.endpoint is empty"),
        (["generator.shutdownGraceSeconds=400"], "generator.terminationGracePeriodSeconds (300) must exceed"),
        (["captioner.autoscaling.enabled=true", "captioner.autoscaling.minReplicaCount=9"], "minReplicaCount exceeds maxReplicaCount"),
    ],
)
def test_invalid_values_are_refused_with_a_clear_message(render, sets, message):
    assert message in render.fails(*sets)


def test_network_policy_allows_only_metrics_in_and_dns_kafka_s3_hub_out(render):
    policy = by_kind(render.objects("all-toggles-on"), "NetworkPolicy")[FULLNAME]["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert [rule["ports"] for rule in policy["ingress"]] == [[{"port": "http", "protocol": "TCP"}]]
    egress_ports = [sorted((p["port"], p["protocol"]) for p in rule["ports"]) for rule in policy["egress"]]
    assert egress_ports == [
        [(53, "TCP"), (53, "UDP")],
        [(9093, "TCP"), (9094, "TCP")],  # from kafka.bootstrapServers
        [(9000, "TCP")],  # the in-chart MinIO
        [(443, "TCP")],  # model hub
        [(4317, "TCP")],  # networkPolicy.extraEgress
    ]
    assert policy["egress"][2]["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "minio"
    default = by_kind(render.objects("existing-secrets"), "NetworkPolicy")[FULLNAME]["spec"]
    assert default["egress"][2]["ports"] == [{"port": 443, "protocol": "TCP"}], "S3 over https without a port: 443"


def test_model_cache_uses_emptydir_or_the_claim(render):
    objects = render.objects("all-toggles-on")
    claims = {stage: next(v for v in d["spec"]["template"]["spec"]["volumes"] if v["name"] == "model-cache")
              for stage, d in stage_deployments(objects).items()}
    assert claims["classifier"] == {"name": "model-cache", "persistentVolumeClaim": {"claimName": f"{FULLNAME}-classifier-model-cache"}}
    assert claims["captioner"]["persistentVolumeClaim"]["claimName"] == "shared-model-cache"
    pvc = by_kind(objects, "PersistentVolumeClaim")[f"{FULLNAME}-generator-model-cache"]["spec"]
    assert (pvc["storageClassName"], pvc["accessModes"]) == ("fast-rwx", ["ReadWriteMany"])
    default = stage_deployments(render.objects("default"))["generator"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "model-cache", "emptyDir": {"sizeLimit": "30Gi"}} in default


def test_service_monitor_selects_the_stage_services_on_their_http_port(render):
    objects = render.objects("all-toggles-on")
    monitor = by_kind(objects, "ServiceMonitor")[FULLNAME]["spec"]
    assert monitor["endpoints"][0]["port"] == "http" and monitor["endpoints"][0]["path"] == "/metrics"
    selected = [
        s for s in by_kind(objects, "Service").values()
        if monitor["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        and s["metadata"]["labels"]["app.kubernetes.io/component"] in monitor["selector"]["matchExpressions"][0]["values"]
    ]
    assert sorted(s["metadata"]["name"] for s in selected) == sorted(f"{FULLNAME}-{stage}" for stage in STAGES)
    assert all(s["spec"]["ports"][0]["name"] == "http" for s in selected)


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
    assert stage_lines == ["classifier", "captioner", "generator"], rendered
    assert "classifier: consumes deskgen.uploaded as group deskgen-classifier" in rendered


# ---- monitoring ---------------------------------------------------------------------------------


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


# ---- values, schema, images ---------------------------------------------------------------------


def _resolve(schema: dict, node: dict) -> dict:
    if "$ref" in node:
        target = schema
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        merged = {**_resolve(schema, target), **{k: v for k, v in node.items() if k != "$ref"}}
        merged["properties"] = {**target.get("properties", {}), **node.get("properties", {})}
        return merged
    return node


def _has_doc_comment(lines: list[str], number: int) -> bool:
    """Whether the comment block right above line `number` holds a `# -- ` doc comment."""
    block = []
    for line in reversed(lines[:number]):
        if not line.lstrip().startswith("#"):
            break
        block.append(line.lstrip())
    return any(line.startswith("# -- ") for line in block)


def test_values_yaml_validates_against_the_schema_and_every_chart_key_is_documented():
    schema = json.loads((CHART / "values.schema.json").read_text())
    lines = (CHART / "values.yaml").read_text().splitlines()
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load("\n".join(lines)))
    # (indent, schema node, whether a comment above the head documents the whole block)
    stack: list[tuple[int, dict, bool]] = [(-1, schema, False)]
    undocumented = []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z0-9_]+):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack[-1][0] >= indent:
            stack.pop()
        _, parent_node, parent_documented = stack[-1]
        parent = _resolve(schema, parent_node)
        if "properties" not in parent:  # inside a free-form Kubernetes object, documented at its head
            stack.append((indent, {}, True))
            continue
        assert key in parent["properties"], f"values.yaml:{number + 1}: {key} is not in the schema"
        node = _resolve(schema, parent["properties"][key])
        commented = _has_doc_comment(lines, number) or parent_documented
        is_section = "properties" in node and line.rstrip().endswith(":")
        if not is_section and not commented:
            undocumented.append(f"values.yaml:{number + 1}: {key}")
        stack.append((indent, node, commented))
    assert not undocumented, "keys without a comment:\n" + "\n".join(undocumented)


def test_schema_shares_one_stage_definition():
    schema = json.loads((CHART / "values.schema.json").read_text())
    for stage in STAGES:
        assert schema["properties"][stage]["$ref"] == "#/$defs/stage"
        assert schema["properties"][stage]["unevaluatedProperties"] is False


DOCKERFILES = {"classifier": "docker/cpu.Dockerfile", "captioner": "docker/cpu.Dockerfile",
               "generator": "docker/gpu.Dockerfile"}


@pytest.mark.parametrize("dockerfile", sorted(set(DOCKERFILES.values())))
def test_dockerfiles_pass_hadolint(tools, dockerfile):
    run(tools.hadolint, ROOT / dockerfile)


@pytest.mark.parametrize("stage", list(STAGES))
def test_each_stage_image_matches_the_chart(stage):
    """The stage's image (its build stage in a multi-stage Dockerfile): the public base by default,
    the stage entry point, the non-root user, the HTTP port and the model cache volume the chart mounts."""
    text = (ROOT / DOCKERFILES[stage]).read_text()
    assert re.search(r"^ARG BASE=python:3\.11-slim-bookworm$", text, re.M)
    section = re.split(r"^FROM ", text, flags=re.M)[-1] if stage == "generator" else \
        next(part for part in re.split(r"^FROM ", text, flags=re.M) if re.match(rf"\S+ AS {stage}$", part, re.M))
    assert f'ENTRYPOINT ["deskgen", "run", "{stage}"]' in section
    assert re.search(r"^USER 10001:10001$", section, re.M)
    assert "EXPOSE 8080" in section
    mount = yaml.safe_load((CHART / "values.yaml").read_text())[stage]["modelCache"]["mountPath"]
    assert f'VOLUME ["{mount}"]' in section

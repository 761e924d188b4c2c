"""deskgen on the local Kubernetes cluster: install, helm test, the running pods' settings read back
from the API, placement with the default values, photos through the stage pods, and Prometheus
discovering the pods and answering the dashboard. The cluster modules run in name order on one release:
this one, then faults (test_cluster_faults.py), KEDA scaling (test_cluster_scaling.py) and the count
(test_cluster_tally.py) under one steady load."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from conftest import (GPU_NODE, KAFKA, NAMESPACE, NODE, RELEASE, ROOT, S3, STAGES, VALUES, all_ready, condition,
                      get_json, helm, job_logs, kubectl, record, samples, stage_pods, submit_job, ts, wait_until)


def test_every_stage_pod_is_ready_after_helm_install_wait(release):
    pods = wait_until("one Ready pod per stage", all_ready, 600)
    for stage, pod in pods.items():
        scheduled = ts(condition(pod, "PodScheduled")["lastTransitionTime"])
        ready = ts(condition(pod, "Ready")["lastTransitionTime"])
        record(f"pod scheduled -> Ready: {stage}", (ready - scheduled).total_seconds(), counted=False)
        assert pod["spec"]["nodeName"] == NODE


def test_helm_test_passes(release):
    started = time.monotonic()
    out = helm("test", RELEASE, "-n", NAMESPACE, "--logs", "--timeout", "10m", timeout=660).stdout
    record("helm test", time.monotonic() - started)
    assert "Phase:          Succeeded" in out or "Succeeded" in out, out
    for stage in STAGES:
        assert f"ok    {RELEASE}-{stage}/readyz" in out, out


def test_running_pods_have_the_charts_resources_probes_and_security(release):
    values = yaml.safe_load(VALUES.read_text())
    pods = all_ready()
    for stage, pod in pods.items():
        spec = pod["spec"]
        container = spec["containers"][0]
        expected = values[stage]["resources"]
        assert container["resources"]["requests"] == expected["requests"], stage
        assert container["resources"]["limits"] == expected["limits"], stage
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["startupProbe"]["periodSeconds"] == values[stage]["probes"]["startup"]["periodSeconds"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["runAsNonRoot"] is True
        assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
        assert spec["securityContext"]["runAsUser"] == 10001 and spec["securityContext"]["runAsNonRoot"] is True
        # What the container really runs as: uid 10001 and a root filesystem it cannot write.
        probe = kubectl("-n", NAMESPACE, "exec", pod["metadata"]["name"], "--", "sh", "-c",
                        "id -u; touch /opt/deskgen/x 2>&1 || true").stdout
        assert probe.splitlines()[0] == "10001", probe
        assert "Read-only file system" in probe, probe
        assert pod["status"]["qosClass"] == "Burstable"
    budgets = {b["metadata"]["name"]: b for b in get_json("pdb", "-n", NAMESPACE)["items"]}
    for stage in STAGES:
        budget = budgets[f"{RELEASE}-{stage}"]
        assert budget["spec"]["maxUnavailable"] == 1
        assert budget["status"]["expectedPods"] == 1 and budget["status"]["disruptionsAllowed"] == 1


def test_default_values_put_the_generator_on_the_gpu_node_only(release):
    """A second release with the chart's defaults (only images, Kafka and S3 pointed at the cluster):
    the generator lands on the KWOK GPU node, the classifier never does."""
    namespace = "deskgen-placement"
    kubectl("create", "namespace", namespace, check=False)
    secret = get_json("secret", "deskgen-s3", "-n", NAMESPACE)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "deskgen-s3", "namespace": namespace},
              "data": secret["data"]}
    kubectl("apply", "-f", "-", input=json.dumps(secret))
    helm("upgrade", "--install", "placement", str(ROOT / "helm" / "deskgen"), "-n", namespace, "--no-hooks",
         "--set", "image.pullPolicy=Never", "--set", f"kafka.bootstrapServers={KAFKA}",
         "--set", f"s3.endpoint={S3}", "--set", "captioner.enabled=false")
    try:
        def placed():
            pods = stage_pods(namespace, "placement")
            decided = all(p["spec"].get("nodeName") or (condition(p, "PodScheduled") or {}).get("reason") == "Unschedulable"
                          for items in pods.values() for p in items)
            return pods if decided and pods["generator"] and pods["classifier"] else None

        pods = wait_until("every placement pod scheduled or unschedulable", placed, 300)
        assert [p["spec"].get("nodeName") for p in pods["generator"]] == [GPU_NODE]
        limits = pods["generator"][0]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1"
        assert all(p["spec"].get("nodeName") != GPU_NODE for p in pods["classifier"])
        # The GPU node has room (32 CPUs): only its taint and the missing GPU toleration keep the classifier off.
        unschedulable = [p for p in pods["classifier"] if not p["spec"].get("nodeName")]
        for pod in unschedulable:
            assert "untolerated taint" in condition(pod, "PodScheduled")["message"], pod["status"]
    finally:
        helm("uninstall", "placement", "-n", namespace, "--wait", "--timeout", "5m", timeout=330, check=False)
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def prometheus(release, tmp_path_factory):
    """Debian's Prometheus on this machine, scraping the stage pods the API server lists behind the
    chart's stage Services (the labels and port its ServiceMonitor selects). Debian builds Prometheus
    without kubernetes_sd_configs ("field kubernetes_sd_configs not found"), so the test asks the API
    server and hands the endpoints to Prometheus's file discovery; ``refresh()`` follows pod changes."""
    folder = tmp_path_factory.mktemp("prometheus")
    targets = folder / "targets.json"

    def refresh() -> int:
        slices = get_json("endpointslices", "-n", NAMESPACE, "-l",
                          f"app.kubernetes.io/name=deskgen,app.kubernetes.io/instance={RELEASE},"
                          f"app.kubernetes.io/component in ({','.join(STAGES)})")["items"]
        groups = []
        for item in slices:
            port = next(p["port"] for p in item["ports"] if p["name"] == "http")
            for endpoint in item.get("endpoints") or []:
                if endpoint.get("conditions", {}).get("ready"):
                    groups.append({"targets": [f"{endpoint['addresses'][0]}:{port}"],
                                   "labels": {"job": item["metadata"]["labels"]["app.kubernetes.io/component"],
                                              "pod": endpoint.get("targetRef", {}).get("name", "")}})
        targets.with_suffix(".tmp").write_text(json.dumps(groups))
        targets.with_suffix(".tmp").rename(targets)
        return len(groups)

    refresh()
    config = {"global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
              "scrape_configs": [{"job_name": "deskgen", "file_sd_configs": [{"files": [str(targets)],
                                                                             "refresh_interval": "2s"}]}]}
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = 29090 + os.getpid() % 500
    process = subprocess.Popen(["prometheus", f"--config.file={folder / 'prometheus.yml'}",
                                f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=open(folder / "prometheus.log", "w"), stderr=subprocess.STDOUT)
    try:
        yield {"url": f"http://127.0.0.1:{port}", "refresh": refresh}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def _prom(url: str, path: str, **params) -> dict:
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{url}{path}?{query}", timeout=10) as response:
        return json.load(response)["data"]


def test_prometheus_discovers_every_stage_pod(prometheus):
    def targets_up():
        try:
            active = _prom(prometheus["url"], "/api/v1/targets")["activeTargets"]
        except OSError:
            return None
        up = {t["labels"].get("job") for t in active if t["health"] == "up"}
        return up if up >= set(STAGES) else None

    assert wait_until("Prometheus scrapes a pod of every stage", targets_up, 180) >= set(STAGES)


def test_photos_from_a_pod_flow_through_the_stage_pods(release, pipeline, prometheus):
    started = time.monotonic()
    submit_job("submit-samples", samples(), {"desk.png": 1, "coffee.jpg": 1, "corrupt.jpg": 1}, watch=True,
               tag=release["tag"])
    kubectl("-n", NAMESPACE, "wait", "job/submit-samples", "--for=condition=complete", "--timeout=1200s", timeout=1260)
    lines = job_logs("submit-samples")
    desk, coffee, corrupt = lines[:3]
    results = {r["job_id"]: r for r in (json.loads(line) for line in lines[3:])}
    record("data path: 3 photos from a pod", time.monotonic() - started)

    assert results[desk]["status"] == "succeeded", results[desk]
    image_key = results[desk]["output"]["image_key"]
    assert pipeline.store.exists(image_key)
    assert (results[coffee]["status"], results[coffee]["reason"]) == ("rejected", "not_desk"), results[coffee]
    assert results[corrupt]["status"] in ("failed", "rejected"), results[corrupt]
    dlq = wait_until("the corrupt photo's DLQ record",
                     lambda: [r for r in pipeline.dlq(1, timeout=10) if r.get("job_id") == corrupt], 120)
    assert dlq[0]["job_id"] == corrupt


def test_keep_devices_and_fast_from_a_pod(release, pipeline):
    """The #13 modes on the cluster: the chart's fastLora and sam values reach the generator pod."""
    submit_job("submit-keep", {"desk.png": samples()["desk.png"]}, {"desk.png": 1}, watch=True, tag=release["tag"],
               options="--mode keep_devices --fast")
    kubectl("-n", NAMESPACE, "wait", "job/submit-keep", "--for=condition=complete", "--timeout=600s", timeout=660)
    job, line = job_logs("submit-keep")
    result = json.loads(line)
    assert (result["job_id"], result["status"]) == (job, "succeeded"), result
    output = result["output"]
    assert (output["mode"], output["fast"], output["mask_key"]) == ("keep_devices", True, f"generated/{job}/keep-mask.png")
    assert output["kept_devices"] and pipeline.store.exists(output["mask_key"])


def test_dashboard_latency_queries_return_data(prometheus):
    from chart.dashboard_queries import panel_queries

    prometheus["refresh"]()  # pods restarted since the fixture started

    queries = [(title, expr) for title, expr in panel_queries(rate_interval="10m", include_gpu=False)
               if "latency" in title.lower()]
    assert queries

    def has_data(expr):
        try:
            result = _prom(prometheus["url"], "/api/v1/query", query=expr)["result"]
        except OSError:
            return False
        return any(math.isfinite(float(series["value"][1])) for series in result)

    for title, expr in queries:
        wait_until(f"dashboard panel {title!r}: {expr}", lambda: has_data(expr), 120)
    stages = {s["metric"]["stage"] for s in _prom(prometheus["url"], "/api/v1/query",
                                                  query=queries[0][1])["result"]}
    assert stages >= set(STAGES), stages

"""deskgen on the local Kubernetes cluster: install, helm test, the running pods' settings read back
from the API, placement with the default values, photos through the stage pods, faults under load,
and Prometheus discovering the pods. The tests run in file order on one release."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from datetime import datetime

import pytest
import yaml
from PIL import Image

from deskgen.common import topology

from chaos import Fault, Load, Results, Sampler, held_jobs, in_flight_at, inflight, interrupted, plot
from conftest import (FAULTS, GPU_NODE, KAFKA, NAMESPACE, NODE, RELEASE, ROOT, S3, STAGES, VALUES, _kafka_answers,
                      _s3_store, condition, get_json, helm, job_logs, kubectl, record, run, stage_pods,
                      submit_job, wait_until)

LOAD_INTERVAL = 1.5  # a photo every 1.5 s, desk and not-desk in turn, for as long as the faults last
BURSTS = {"classifier": 30, "captioner": 8, "generator": 6}  # photos that give a stage's pod jobs to hold
KILL_ROUNDS = 2  # each: per stage one SIGKILL in place and one force deletion
SETTLE_S = 30  # no terminal result for this long (and backlog 0) before counting
FAULT_PLOT = ROOT / ".cache" / "k8s" / "faults.png"


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _samples() -> dict[str, bytes]:
    from skimage import data

    from samples import draw_desk

    def encode(image: Image.Image, fmt: str) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
        return buffer.getvalue()

    return {"desk.png": encode(draw_desk(seed=1), "PNG"),
            "coffee.jpg": encode(Image.fromarray(data.coffee()), "JPEG"),
            "corrupt.jpg": b"this is a text file with a .jpg name\n"}


def _all_ready() -> dict[str, dict] | None:
    pods = stage_pods()
    ready = {}
    for stage, items in pods.items():
        live = [p for p in items if (condition(p, "Ready") or {}).get("status") == "True"]
        if not live or len(items) != 1:
            return None
        ready[stage] = live[0]
    return ready


def test_every_stage_pod_is_ready_after_helm_install_wait(release):
    pods = wait_until("one Ready pod per stage", _all_ready, 600)
    for stage, pod in pods.items():
        scheduled = _ts(condition(pod, "PodScheduled")["lastTransitionTime"])
        ready = _ts(condition(pod, "Ready")["lastTransitionTime"])
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
    pods = _all_ready()
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
    submit_job("submit-samples", _samples(), {"desk.png": 1, "coffee.jpg": 1, "corrupt.jpg": 1}, watch=True,
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
    submit_job("submit-keep", {"desk.png": _samples()["desk.png"]}, {"desk.png": 1}, watch=True, tag=release["tag"],
               options="--mode keep_devices --fast")
    kubectl("-n", NAMESPACE, "wait", "job/submit-keep", "--for=condition=complete", "--timeout=600s", timeout=660)
    job, line = job_logs("submit-keep")
    result = json.loads(line)
    assert (result["job_id"], result["status"]) == (job, "succeeded"), result
    output = result["output"]
    assert (output["mode"], output["fast"], output["mask_key"]) == ("keep_devices", True, f"generated/{job}/keep-mask.png")
    assert output["kept_devices"] and pipeline.store.exists(output["mask_key"])


@pytest.fixture(scope="module")
def chaos(release, pipeline):
    """A steady load (a desk and a not-desk photo in turn), the terminal results read as they come and the
    backlog / Ready replicas sampled, from before the first fault until the counting test stops them."""
    samples = _samples()
    load = Load(pipeline, [("desk.png", samples["desk.png"]), ("coffee.jpg", samples["coffee.jpg"])], LOAD_INTERVAL)
    results, sampler = Results(pipeline), Sampler(pipeline, _ready_replicas)
    state = {"load": load, "results": results, "sampler": sampler, "faults": [], "start": time.time(),
             "samples": samples}
    for thread in (results, sampler, load):
        thread.start()
    yield state
    for thread in (load, sampler, results):
        if thread.is_alive():
            try:
                thread.stop()
            except Exception:  # teardown after a failure: the failure is what matters
                pass


def _ready_replicas() -> dict[str, int]:
    deployments = get_json("deployments", "-n", NAMESPACE, "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]
    return {d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component"): d["status"].get("readyReplicas", 0)
            for d in deployments}


def _restarts(pod: dict) -> int:
    return pod["status"]["containerStatuses"][0]["restartCount"]


def _pod(name: str) -> dict:
    return get_json("pod", name, "-n", NAMESPACE)


def _kill_in_place(pod: dict, *, after=None) -> None:
    """SIGKILL of the pod's container by the runtime (right after ``after()``, when given): the kubelet
    restarts it in the same pod."""
    container = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    if after:
        after()
    run(str(ROOT / "k8s" / "cluster.sh"), "ctr", "tasks", "kill", "--signal", "SIGKILL", container)
    before = _restarts(pod)
    wait_until(f"{pod['metadata']['name']} restarted", lambda: _restarts(_pod(pod["metadata"]["name"])) > before, 300)


def _burst(chaos, stage: str) -> None:
    """Work for ``stage`` at once: not-desk photos end at the classifier, desk photos reach every stage."""
    photo = "coffee.jpg" if stage == "classifier" else "desk.png"
    chaos["load"].submit(BURSTS[stage], photo=(photo, chaos["samples"][photo]))


def _kill_holding(chaos, pipeline, stage: str, kind: str) -> Fault:
    """Waits until the stage's Ready pod holds jobs (its gauge > 0 and uncommitted records on its
    partitions), then kills it: ``kind`` "SIGKILL in place" or "force delete" (no grace)."""
    deadline, next_burst = time.monotonic() + 300, 0.0
    while time.monotonic() < deadline:
        if time.monotonic() > next_burst:
            _burst(chaos, stage)
            next_burst = time.monotonic() + 20
        pod = next((p for p in stage_pods()[stage] if (condition(p, "Ready") or {}).get("status") == "True"), None)
        if pod is None or not inflight(pod, stage):
            time.sleep(0.1)
            continue
        held = held_jobs(pipeline, stage, pod["status"]["podIP"])
        gauge = inflight(pod, stage)
        # Two held jobs at least: the one in hand may be committed in the second before the signal.
        if not (len(held) >= 2 and gauge):
            time.sleep(0.5)
            continue
        fault = Fault(kind, stage, pod["metadata"]["name"], time.time(), gauge, held)
        if kind == "force delete":
            kubectl("-n", NAMESPACE, "delete", "pod", pod["metadata"]["name"], "--grace-period=0", "--force",
                    "--wait=false")
        else:
            _kill_in_place(pod)
        return fault
    raise AssertionError(f"{stage}: no Ready pod held jobs within 300 s")


def test_hard_kills_hit_stage_pods_that_hold_jobs(chaos, pipeline):
    """Four hard kills per stage (two SIGKILLs in place, two force deletions), each while the pod holds jobs."""
    started = time.monotonic()
    wait_until("one Ready pod per stage", _all_ready, 900)
    for _ in range(KILL_ROUNDS):
        for kind in ("SIGKILL in place", "force delete"):
            for stage in reversed(STAGES):  # the generator first: the load's backlog is there
                chaos["faults"].append(_kill_holding(chaos, pipeline, stage, kind))
            wait_until("one Ready pod per stage", _all_ready, 900)
    kills = [f for f in chaos["faults"] if f.target in STAGES]
    record(f"hard kills: {len(kills)} SIGKILLs/force deletions of stage pods holding jobs", time.monotonic() - started)
    assert len(kills) >= 10 and {f.target for f in kills} == set(STAGES)
    assert all(f.inflight and f.held for f in kills)


def _dev_pod(name: str) -> dict:
    pods = get_json("pods", "-n", NAMESPACE, "-l", f"app.kubernetes.io/name={name}")["items"]
    return next(p for p in pods if not p["metadata"].get("deletionTimestamp"))


def _kill_dependency(chaos, name: str, kind: str, evidence=lambda: "") -> Fault:
    """SIGKILL of the Kafka or S3Proxy container (its emptyDir data stays) as soon as ``evidence()`` has
    something to say (what was open at the kill); waits until it serves again and every stage pod is Ready."""
    pod = _dev_pod(name)
    fault = Fault(kind, name, pod["metadata"]["name"], 0.0)

    def strike():
        fault.evidence = evidence()
        fault.at = time.time()

    _kill_in_place(pod, after=strike)
    chaos["faults"].append(fault)
    kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{name}", "--timeout=600s", timeout=660)
    wait_until("one Ready pod per stage", _all_ready, 900)
    return fault


def test_broker_killed_mid_transaction_comes_back(chaos, pipeline):
    started = time.monotonic()
    stage_outputs = tuple({stage.produces for stage in topology.STAGES.values()} | {"generated"})

    def open_transactions():
        try:
            return pipeline.open_transactions(stage_outputs)
        except Exception:  # a metadata hiccup: look again
            return None

    _burst(chaos, "generator")
    fault = _kill_dependency(chaos, "kafka", "broker SIGKILL", lambda: "open: " + "; ".join(
        wait_until("a stage transaction open", open_transactions, 300, interval=0.05)))
    wait_until("the in-cluster Kafka serves metadata", _kafka_answers, 300)
    record("broker SIGKILLed with a stage transaction open, back and stages Ready", time.monotonic() - started)
    assert fault.evidence.startswith("open: ") and "[" in fault.evidence


def test_s3_killed_under_load_comes_back(chaos, pipeline):
    started = time.monotonic()
    _burst(chaos, "generator")
    _kill_dependency(chaos, "s3proxy", "S3 SIGKILL")
    wait_until("the in-cluster S3 answers", _s3_store, 300)
    record("S3Proxy SIGKILLed, back and stages Ready", time.monotonic() - started)


def test_helm_upgrade_rolls_every_deployment_under_load(chaos):
    started = time.monotonic()
    before = {stage: pods["metadata"]["uid"] for stage, pods in wait_until("Ready pods", _all_ready, 900).items()}
    chaos["faults"].append(Fault("helm upgrade", "all", "", time.time()))
    helm("upgrade", RELEASE, str(ROOT / "helm" / "deskgen"), "-n", NAMESPACE, "-f", str(VALUES),
         "--set-string", "podAnnotations.deskgen-test/rolled=1", "--wait", "--timeout", "20m", timeout=1260)
    after = {stage: pods["metadata"]["uid"] for stage, pods in wait_until("rolled pods Ready", _all_ready, 900).items()}
    assert all(before[stage] != after[stage] for stage in STAGES), "helm upgrade did not roll every Deployment"
    record("helm upgrade rolling every Deployment under load", time.monotonic() - started)


def test_no_job_lost_or_duplicated_once_the_backlog_drains(chaos, pipeline):
    """Counted only after the load stopped, every stage's backlog is 0 and no result came for SETTLE_S."""
    started = time.monotonic()
    load, results = chaos["load"], chaos["results"]
    load.stop()

    def drained():
        if time.time() - results.last_arrival() < SETTLE_S:
            return None
        return _backlog_zero(pipeline)

    wait_until(f"backlog 0 on every stage and no result for {SETTLE_S} s", drained, 1800, interval=5)
    chaos["sampler"].stop()
    results.stop()
    by_job = results.by_job()
    chaos["by_job"] = by_job
    submitted = load.submitted
    lost = [job for job in submitted if not by_job.get(job)]
    duplicated = {job: len(by_job[job]) for job in submitted if len(by_job.get(job, [])) > 1}
    arrivals = {}
    for at, data in results.records:
        arrivals.setdefault(data["job_id"], at)
    statuses: dict[str, int] = {}
    for job in submitted:
        for result in by_job.get(job, []):
            statuses[result["status"]] = statuses.get(result["status"], 0) + 1
    lines = [f"{len(submitted)} jobs submitted during the faults ({len(load.refused)} refused while S3 was away), "
             f"results {statuses}: lost {len(lost)}, duplicates {len(duplicated)} "
             f"(counted after backlog 0 and {SETTLE_S} s without a result)"]
    for fault in chaos["faults"]:
        lines.append(f"{fault.at - chaos['start']:7.1f} s  {fault.kind:<17} {fault.target:<10} {fault.pod:<40} "
                     f"in flight {in_flight_at(fault.at, submitted, arrivals):>3}"
                     + (f", pod gauge {fault.inflight:.0f}, held {len(fault.held)}" if fault.held else "")
                     + (f", {fault.evidence}" if fault.evidence else ""))
    FAULTS.write_text("\n".join(lines) + "\n")
    record(f"count after drain: {len(submitted)} jobs, lost {len(lost)}, duplicates {len(duplicated)}",
           time.monotonic() - started)
    assert not lost, lost[:10]
    assert not duplicated, duplicated
    assert len(submitted) >= 100


def test_every_hard_kill_interrupted_a_job_it_held(chaos):
    """From the jobs' timelines: a killed pod held a job queued before the kill whose committed run of that
    stage began after it (on the restarted pod or another) — for at least 10 kills, on every stage."""
    by_job = chaos.get("by_job")
    assert by_job is not None, "the counting test did not run"
    kills = [f for f in chaos["faults"] if f.target in STAGES]
    proven = {id(f): interrupted(f, by_job) for f in kills}
    with FAULTS.open("a") as report:
        for fault in kills:
            report.write(f"{fault.kind} {fault.target} {fault.pod}: interrupted {len(proven[id(fault)])} "
                         f"held job(s), e.g. {proven[id(fault)][:2]}\n")
    # A job can finish in the instant between seeing it held and the kill: the issue asks for ≥ 10 proven kills,
    # from every stage, so 12 are aimed and the unproven ones are named in the report.
    proven_kills = [f for f in kills if proven[id(f)]]
    unproven = [(f.kind, f.target, f.pod) for f in kills if not proven[id(f)]]
    assert len(proven_kills) >= 10 and {f.target for f in proven_kills} == set(STAGES), unproven


def test_fault_plot_is_written(chaos):
    submitted = chaos["load"].submitted
    results = [(at, data) for at, data in chaos["results"].records if data["job_id"] in submitted]
    plot(FAULT_PLOT, chaos["sampler"].samples, results, chaos["faults"], chaos["start"])
    assert FAULT_PLOT.stat().st_size > 10_000


def _backlog_zero(pipeline):
    total = sum(pipeline.backlog(f"deskgen-{stage.name}", stage.consumes) for stage in topology.STAGES.values())
    return (True, total) if total == 0 else None


def test_dashboard_latency_queries_return_data(prometheus):
    from chart.dashboard_queries import panel_queries

    prometheus["refresh"]()  # the pods the faults test replaced

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

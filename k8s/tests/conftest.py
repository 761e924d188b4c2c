"""The cluster tests (``make k8s-test``): the chart installed on the local cluster (k8s/cluster.sh).

The machine reaches the cluster's Services through kube-proxy, so the checks that read Kafka and S3
(terminal results, the DLQ, consumer lag, generated images) run here; photos are submitted from a
pod inside the cluster. Every wait is on a condition with a generous bound, never a fixed sleep.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from deskgen.common import topology

ROOT = Path(__file__).resolve().parents[2]
sys.path += [str(ROOT / "stack"), str(ROOT / "tests")]  # samples, pipeline; chart.dashboard_queries

BIN = ROOT / ".cache" / "k8s" / "bin"
KUBECONFIG = ROOT / ".cache" / "k8s" / "run" / "admin.kubeconfig"
TIMINGS = ROOT / ".cache" / "k8s" / "timings.tsv"
FAULTS = ROOT / ".cache" / "k8s" / "faults.txt"  # the faults tests' report
NAMESPACE = "deskgen"
RELEASE = "deskgen"
STAGES = tuple(topology.STAGES)
KAFKA = "10.96.100.10:9092"
S3 = "10.96.100.11:9000"
S3_KEYS = ("deskgen-dev", "deskgen-dev-secret-key")  # k8s/dev-deps.yaml
VALUES = ROOT / "k8s" / "values-local.yaml"
NODE, SPARE_NODE, GPU_NODE = "deskgen-node", "deskgen-node2", "deskgen-gpu"  # k8s/cluster.sh
LOAD_INTERVAL = 1.5  # the faults' steady load: a photo every 1.5 s, desk and not-desk in turn
BURSTS = {"classifier": 30, "captioner": 8, "generator": 6}  # photos that give a stage's pod jobs to hold

# The machine-side clients talk to the in-cluster Kafka and S3.
os.environ.update({
    "DESKGEN_KAFKA_BOOTSTRAP_SERVERS": KAFKA, "DESKGEN_S3_ENDPOINT": S3, "DESKGEN_S3_SECURE": "false",
    "DESKGEN_S3_ACCESS_KEY": S3_KEYS[0], "DESKGEN_S3_SECRET_KEY": S3_KEYS[1], "DESKGEN_S3_BUCKET": "deskgen",
    "KUBECONFIG": str(KUBECONFIG),
})


def record(phase: str, seconds: float, *, counted: bool = True) -> None:
    """One row of the timing table printed at the end (k8s/test.sh writes the set-up rows); rows
    that overlap others (a pod's start inside the install) are not added to the total."""
    with TIMINGS.open("a") as out:
        out.write(f"{phase}\t{seconds:.0f}\t{'' if counted else 'overlaps'}\n")


def run(*args: str, timeout: float = 600, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def kubectl(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run(str(BIN / "kubectl"), *args, **kwargs)


def helm(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run(str(BIN / "helm"), *args, **kwargs)


def get_json(*args: str) -> dict:
    return json.loads(kubectl("get", "-o", "json", *args).stdout)


def wait_until(what: str, predicate, timeout: float, interval: float = 2.0):
    """Polls ``predicate`` until it returns something truthy; fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:.0f}s")
        time.sleep(interval)


def pytest_terminal_summary(terminalreporter):
    if FAULTS.exists():
        terminalreporter.section("faults (this run; seconds since the load started)")
        for line in FAULTS.read_text().splitlines():
            terminalreporter.write_line(f"  {line}")
    if not TIMINGS.exists():
        return
    rows = [(line.split("\t") + [""])[:3] for line in TIMINGS.read_text().splitlines() if "\t" in line]
    terminalreporter.section("phase timings (this run)")
    for phase, seconds, note in rows:
        terminalreporter.write_line(f"  {phase:<72} {int(seconds):>6} s {'(not in the total)' if note else ''}")
    terminalreporter.write_line(f"  {'total':<72} {sum(int(s) for _, s, note in rows if not note):>6} s")


@pytest.fixture(scope="session")
def release():
    """Dev dependencies up, dev weights in S3, the chart installed with --wait (once per session)."""
    return install_release()


def install_release() -> dict:
    """Dev dependencies up, dev weights in S3, the chart installed with --wait; idempotent."""
    from devenv import dev_model_env

    tag = run(str(ROOT / "k8s" / "images.sh"), "tag").stdout.strip()
    started = time.monotonic()
    kubectl("create", "namespace", NAMESPACE, check=False)
    kubectl("apply", "-f", "-", input=(ROOT / "k8s" / "dev-deps.yaml").read_text().replace(":TAG", f":{tag}"))
    kubectl("-n", NAMESPACE, "rollout", "status", "deployment/kafka", "deployment/s3proxy", "--timeout=600s",
            timeout=660)
    wait_until("the in-cluster Kafka serves metadata", _kafka_answers, 300)
    store = wait_until("the in-cluster S3 answers", _s3_store, 300)
    record("dev deps up (Kafka, S3Proxy)", time.monotonic() - started)

    started = time.monotonic()
    for variable in ("DESKGEN_CAPTIONER_MODEL", "DESKGEN_GENERATOR_MODEL"):
        folder = Path(dev_model_env()[variable].removeprefix("file://"))
        stage = variable.split("_")[1].lower()
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            store.put(f"models/{stage}-tiny/{path.relative_to(folder)}", path.read_bytes(), "application/octet-stream")
    record("dev weights to in-cluster S3", time.monotonic() - started)

    started = time.monotonic()
    helm("upgrade", "--install", RELEASE, str(ROOT / "helm" / "deskgen"), "-n", NAMESPACE, "-f", str(VALUES),
         "--wait", "--timeout", "20m", timeout=1260)
    record("helm install --wait", time.monotonic() - started)
    return {"tag": tag, "store": store}


def _kafka_answers() -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        return bool(AdminClient({"bootstrap.servers": KAFKA}).list_topics(timeout=5).brokers)
    except Exception:  # the broker is still starting
        return False


def _s3_store():
    from deskgen.common.settings import S3Settings, load
    from deskgen.common.storage import ObjectStore

    try:
        store = ObjectStore(load(S3Settings))
        store.ensure_bucket()
        return store
    except Exception:  # S3Proxy is still starting
        return None


def stage_pods(namespace: str = NAMESPACE, release: str = RELEASE) -> dict[str, list[dict]]:
    pods = get_json("pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}")["items"]
    by_stage: dict[str, list[dict]] = {stage: [] for stage in STAGES}
    for pod in pods:
        component = pod["metadata"]["labels"].get("app.kubernetes.io/component")
        if component in by_stage and not pod["metadata"].get("deletionTimestamp"):
            by_stage[component].append(pod)
    return by_stage


def condition(pod: dict, kind: str) -> dict | None:
    return next((c for c in pod.get("status", {}).get("conditions", []) if c["type"] == kind), None)


def is_ready(pod: dict) -> bool:
    return (condition(pod, "Ready") or {}).get("status") == "True"


def submit_job(name: str, files: dict[str, bytes], repeat: dict[str, int], *, watch: bool, tag: str,
               options: str = "") -> None:
    """A Job in the cluster that runs ``deskgen submit [options]`` (the backend's position) on photos from a
    ConfigMap, each file ``repeat[name]`` times, and with ``watch`` also ``deskgen watch`` on its jobs."""
    import base64

    kubectl("-n", NAMESPACE, "delete", "configmap,job", name, "--ignore-not-found", "--wait=true")
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NAMESPACE},
                 "binaryData": {key: base64.b64encode(data).decode() for key, data in files.items()}}
    paths = " ".join(f"/photos/{key}" for key, count in repeat.items() for _ in range(count))
    script = f"deskgen submit {options} {paths} > /tmp/ids && cat /tmp/ids"
    if watch:
        script += " && deskgen watch $(cat /tmp/ids) --json --timeout 1200"
    env = [{"name": "DESKGEN_KAFKA_BOOTSTRAP_SERVERS", "value": KAFKA},
           {"name": "DESKGEN_S3_ENDPOINT", "value": S3}, {"name": "DESKGEN_S3_BUCKET", "value": "deskgen"},
           {"name": "HOME", "value": "/tmp"}]
    env += [{"name": f"DESKGEN_S3_{var}", "valueFrom": {"secretKeyRef": {"name": "deskgen-s3", "key": key}}}
            for var, key in (("ACCESS_KEY", "access-key"), ("SECRET_KEY", "secret-key"))]
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NAMESPACE},
           "spec": {"backoffLimit": 0, "template": {"spec": {
               "restartPolicy": "Never", "automountServiceAccountToken": False,
               "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
               "containers": [{"name": "submit", "image": f"docker.io/deskgen/classifier:{tag}",
                               "imagePullPolicy": "Never", "command": ["sh", "-c", script], "env": env,
                               "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
                               "volumeMounts": [{"name": "photos", "mountPath": "/photos"},
                                                {"name": "tmp", "mountPath": "/tmp"}]}],
               "volumes": [{"name": "photos", "configMap": {"name": name}}, {"name": "tmp", "emptyDir": {}}]}}}}
    kubectl("apply", "-f", "-", input=json.dumps(configmap))
    kubectl("apply", "-f", "-", input=json.dumps(job))


def job_logs(name: str) -> list[str]:
    return kubectl("-n", NAMESPACE, "logs", f"job/{name}").stdout.splitlines()


@pytest.fixture(scope="session")
def pipeline(release, tmp_path_factory):
    """The stack's Kafka/S3 reader (stack/pipeline.py) on the release's topics and bucket."""
    from pipeline import Pipeline

    return Pipeline(base_env={k: v for k, v in os.environ.items() if k.startswith("DESKGEN_")},
                    workdir=tmp_path_factory.mktemp("pipeline"), prefix="deskgen.")


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def samples() -> dict[str, bytes]:
    """A desk photo, a not-desk photo and a corrupt file."""
    from PIL import Image
    from skimage import data

    from samples import draw_desk

    def encode(image: Image.Image, fmt: str) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
        return buffer.getvalue()

    return {"desk.png": encode(draw_desk(seed=1), "PNG"),
            "coffee.jpg": encode(Image.fromarray(data.coffee()), "JPEG"),
            "corrupt.jpg": b"this is a text file with a .jpg name\n"}


def all_ready() -> dict[str, dict] | None:
    """Each stage's pod when every stage has exactly one pod and it is Ready."""
    pods = stage_pods()
    ready = {}
    for stage, items in pods.items():
        live = [p for p in items if is_ready(p)]
        if not live or len(items) != 1:
            return None
        ready[stage] = live[0]
    return ready


def ready_replicas() -> dict[str, int]:
    deployments = get_json("deployments", "-n", NAMESPACE, "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]
    return {d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component"): d["status"].get("readyReplicas", 0)
            for d in deployments}


def burst(chaos, stage: str) -> None:
    """Work for ``stage`` at once: not-desk photos end at the classifier, desk photos reach every stage."""
    photo = "coffee.jpg" if stage == "classifier" else "desk.png"
    chaos["load"].submit(BURSTS[stage], photo=(photo, chaos["samples"][photo]))


@pytest.fixture(scope="session")
def chaos(release, pipeline):
    """A steady load (a desk and a not-desk photo in turn), the terminal results read as they come and the
    backlog / Ready replicas sampled, from before the first fault (test_cluster_drain.py) through the KEDA
    burst (test_cluster_scaling.py) until the counting (test_cluster_tally.py) stops them."""
    from chaos import Load, Results, Sampler

    photos = samples()
    load = Load(pipeline, [("desk.png", photos["desk.png"]), ("coffee.jpg", photos["coffee.jpg"])], LOAD_INTERVAL)
    results, sampler = Results(pipeline), Sampler(pipeline, ready_replicas)
    state = {"load": load, "results": results, "sampler": sampler, "faults": [], "start": time.time(),
             "samples": photos}
    for thread in (results, sampler, load):
        thread.start()
    yield state
    for thread in (load, sampler, results):
        if thread.is_alive():
            try:
                thread.stop()
            except Exception:  # teardown after a failure: the failure is what matters
                pass

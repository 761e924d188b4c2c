"""Faults on the cluster under the steady load (the session's ``chaos`` fixture): hard kills of stage pods
that hold jobs, the broker killed mid-transaction, S3 killed, a rolling ``helm upgrade``. What they did
is counted and proven in test_cluster_tally.py."""

from __future__ import annotations

import time

from deskgen.common import topology

from chaos import Fault, held_jobs, inflight
from conftest import (NAMESPACE, RELEASE, ROOT, STAGES, VALUES, _kafka_answers, _s3_store, all_ready, burst,
                      get_json, helm, is_ready, kubectl, record, run, stage_pods, wait_until)

KILL_ROUNDS = 2  # each: per stage one SIGKILL in place and one force deletion


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


def _kill_holding(chaos, pipeline, stage: str, kind: str) -> Fault:
    """Waits until the stage's Ready pod holds jobs (its gauge > 0 and uncommitted records on its
    partitions), then kills it: ``kind`` "SIGKILL in place" or "force delete" (no grace)."""
    deadline, next_burst = time.monotonic() + 300, 0.0
    while time.monotonic() < deadline:
        if time.monotonic() > next_burst:
            burst(chaos, stage)
            next_burst = time.monotonic() + 20
        pod = next((p for p in stage_pods()[stage] if is_ready(p)), None)
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
    wait_until("one Ready pod per stage", all_ready, 900)
    for _ in range(KILL_ROUNDS):
        for kind in ("SIGKILL in place", "force delete"):
            for stage in reversed(STAGES):  # the generator first: the load's backlog is there
                chaos["faults"].append(_kill_holding(chaos, pipeline, stage, kind))
            wait_until("one Ready pod per stage", all_ready, 900)
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
    wait_until("one Ready pod per stage", all_ready, 900)
    return fault


def test_broker_killed_mid_transaction_comes_back(chaos, pipeline):
    started = time.monotonic()
    stage_outputs = tuple({stage.produces for stage in topology.STAGES.values()} | {"generated"})

    def open_transactions():
        try:
            return pipeline.open_transactions(stage_outputs)
        except Exception:  # a metadata hiccup: look again
            return None

    burst(chaos, "generator")
    fault = _kill_dependency(chaos, "kafka", "broker SIGKILL", lambda: "open: " + "; ".join(
        wait_until("a stage transaction open", open_transactions, 300, interval=0.05)))
    wait_until("the in-cluster Kafka serves metadata", _kafka_answers, 300)
    record("broker SIGKILLed with a stage transaction open, back and stages Ready", time.monotonic() - started)
    assert fault.evidence.startswith("open: ") and "[" in fault.evidence


def test_s3_killed_under_load_comes_back(chaos, pipeline):
    started = time.monotonic()
    burst(chaos, "generator")
    _kill_dependency(chaos, "s3proxy", "S3 SIGKILL")
    wait_until("the in-cluster S3 answers", _s3_store, 300)
    record("S3Proxy SIGKILLed, back and stages Ready", time.monotonic() - started)


def test_helm_upgrade_rolls_every_deployment_under_load(chaos):
    started = time.monotonic()
    before = {stage: pods["metadata"]["uid"] for stage, pods in wait_until("Ready pods", all_ready, 900).items()}
    chaos["faults"].append(Fault("helm upgrade", "all", "", time.time()))
    helm("upgrade", RELEASE, str(ROOT / "helm" / "deskgen"), "-n", NAMESPACE, "-f", str(VALUES),
         "--set-string", "podAnnotations.deskgen-test/rolled=1", "--wait", "--timeout", "20m", timeout=1260)
    after = {stage: pods["metadata"]["uid"] for stage, pods in wait_until("rolled pods Ready", all_ready, 900).items()}
    assert all(before[stage] != after[stage] for stage in STAGES), "helm upgrade did not roll every Deployment"
    record("helm upgrade rolling every Deployment under load", time.monotonic() - started)



"""KEDA on the cluster (k8s/keda.sh installs it): the chart's ScaledObject scales the captioner on its
consumer group's lag. Under the session's steady load the captioner's autoscaling is turned on (a helm
upgrade of the release); a burst of desk photos keeps the lag above what two replicas are sized for
until three replicas are Ready and each has captioned jobs, then stops: the lag drains and KEDA's HPA
scales the captioner back to one. The lag and the replicas are sampled every second; the burst is
marked on the faults plot and its times go to the report."""

from __future__ import annotations

import json
import threading
import time

import pytest
import yaml

from deskgen.common import topology

from chaos import Fault, pod_metric
from conftest import (NAMESPACE, RELEASE, ROOT, VALUES, condition, get_json, helm, kubectl, record, stage_pods, ts,
                      wait_until)

STAGE = topology.STAGES["captioner"]
GROUP = f"deskgen-{STAGE.name}"
THRESHOLD = yaml.safe_load(VALUES.read_text())[STAGE.name]["autoscaling"]["lagThreshold"]
SCALED = 3  # replicas the burst must bring: the HPA asks for them once the lag exceeds 2 x THRESHOLD
BURST = 40  # desk photos per top-up
TOP_UP_BELOW = 6 * THRESHOLD  # the burst tops the lag up while it is below this
MAX_PHOTOS = 800
DEPLOYMENT = f"{RELEASE}-{STAGE.name}"
HPA = f"keda-hpa-{DEPLOYMENT}"  # the HPA KEDA makes for the ScaledObject


def _quantity(value: str) -> float:
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


class Watch(threading.Thread):
    """Every second: the captioner group's lag, the Deployment's desired and Ready replicas, and KEDA's
    metric as the HPA controller last read it."""

    def __init__(self, pipeline):
        super().__init__(daemon=True, name="keda-watch")
        self.pipeline = pipeline
        self.samples: list[dict] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(1.0):
            try:
                lag = self.pipeline.backlog(GROUP, STAGE.consumes, timeout=5)
                deployment = get_json("deployment", DEPLOYMENT, "-n", NAMESPACE)
                hpa = get_json("hpa", HPA, "-n", NAMESPACE)
            except Exception:  # the broker or the API server did not answer in time: skip this second
                continue
            metric = next((m["external"]["current"] for m in hpa["status"].get("currentMetrics") or []
                           if m.get("type") == "External"), {})
            self.samples.append({"at": time.time(), "lag": lag, "desired": deployment["spec"].get("replicas", 0),
                                 "ready": deployment["status"].get("readyReplicas", 0),
                                 "hpa_metric": _quantity(metric["averageValue"]) if "averageValue" in metric else None})

    def first(self, predicate, after: float = 0.0) -> float | None:
        return next((s["at"] for s in list(self.samples) if s["at"] >= after and predicate(s)), None)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(30)


def _hpa() -> dict | None:
    found = kubectl("get", "hpa", HPA, "-n", NAMESPACE, "-o", "json", check=False)
    return json.loads(found.stdout) if found.returncode == 0 else None


@pytest.fixture(scope="module")
def scaling(chaos, pipeline):
    started = time.monotonic()
    helm("upgrade", RELEASE, str(ROOT / "helm" / "deskgen"), "-n", NAMESPACE, "--reuse-values",
         "--set", f"{STAGE.name}.autoscaling.enabled=true", "--wait", "--timeout", "10m", timeout=660)
    hpa = wait_until("KEDA made the captioner's HPA", _hpa, 300)
    record("captioner autoscaling on: ScaledObject applied, KEDA's HPA made", time.monotonic() - started)
    watch = Watch(pipeline)
    watch.start()
    yield {"watch": watch, "hpa": hpa}
    watch.stop()


def test_the_hpa_controller_reads_kedas_lag_metric(scaling):
    """The ScaledObject is Ready, the metrics adapter serves its lag metric through the API server's
    aggregation layer, and the HPA controller reads it (ScalingActive)."""
    wait_until("the ScaledObject Ready", lambda: (condition(get_json("scaledobject", DEPLOYMENT, "-n", NAMESPACE),
                                                            "Ready") or {}).get("status") == "True", 300)
    external = scaling["hpa"]["spec"]["metrics"][0]["external"]
    name, selector = external["metric"]["name"], external["metric"]["selector"]["matchLabels"]
    assert selector == {"scaledobject.keda.sh/name": DEPLOYMENT}
    raw = kubectl("get", "--raw", f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{NAMESPACE}/{name}"
                  f"?labelSelector=scaledobject.keda.sh%2Fname%3D{DEPLOYMENT}").stdout
    items = json.loads(raw)["items"]
    assert items and items[0]["metricName"] == name, raw
    assert external["target"] == {"type": "AverageValue", "averageValue": str(THRESHOLD)}

    def active():
        hpa = _hpa() or {}
        found = next((c for c in hpa.get("status", {}).get("conditions", []) if c["type"] == "ScalingActive"), {})
        return found if found.get("status") == "True" else None

    found = wait_until("the HPA controller reads KEDA's metric (ScalingActive)", active, 300)
    assert found["reason"] == "ValidMetricFound", found


def _captioned(pods: list[dict]) -> dict[str, float]:
    """Jobs each captioner pod has captioned (its deskgen_events_total, outcome ok)."""
    return {p["metadata"]["name"]: pod_metric(p, "deskgen_events_total", stage=STAGE.name, outcome="ok") or 0.0
            for p in pods if p.get("status", {}).get("podIP")}


def test_captioner_scales_out_on_lag_during_a_burst(scaling, chaos, pipeline):
    """From 1 to >= 3 replicas on the lag; >= 3 replicas Ready, each captioning jobs of the burst (the 6
    partitions shared among them)."""
    watch = scaling["watch"]
    wait_until("the captioner at one replica before the burst",
               lambda: watch.samples and watch.samples[-1]["desired"] == 1 and watch.samples[-1]["ready"] == 1, 300)
    before = _captioned(stage_pods()[STAGE.name])
    burst = Fault("KEDA burst", "keda", DEPLOYMENT, time.time())
    chaos["faults"].append(burst)
    photo = ("desk.png", chaos["samples"]["desk.png"])
    photos, last_top_up, deadline = 0, 0.0, time.monotonic() + 900
    while True:
        last = watch.samples[-1]
        sharing = {pod: n for pod, n in _captioned(stage_pods()[STAGE.name]).items() if n > before.get(pod, 0)}
        if last["ready"] >= SCALED and len(sharing) >= SCALED:
            break
        assert time.monotonic() < deadline, f"not {SCALED} Ready replicas sharing the work in 900 s: {last}, {sharing}"
        if last["lag"] < TOP_UP_BELOW and time.monotonic() - last_top_up > 10 and photos < MAX_PHOTOS:
            chaos["load"].submit(BURST, photo=photo)
            photos, last_top_up = photos + BURST, time.monotonic()
        time.sleep(1)
    scaling["out_at"] = time.time()

    lagging = watch.first(lambda s: s["lag"] > (SCALED - 1) * THRESHOLD, after=burst.at)
    desired = watch.first(lambda s: s["desired"] >= SCALED, after=burst.at)
    ready = watch.first(lambda s: s["ready"] >= SCALED, after=burst.at)
    assert lagging and desired and ready and lagging <= desired <= ready, (lagging, desired, ready)
    peak = max(s["desired"] for s in watch.samples if s["at"] >= burst.at)
    peak_lag = max(s["lag"] for s in watch.samples if s["at"] >= burst.at)
    burst.evidence = (f"{photos} desk photos; lag > {(SCALED - 1) * THRESHOLD} at +{lagging - burst.at:.0f} s "
                      f"(peak {peak_lag}); {SCALED}+ replicas asked {desired - lagging:.0f} s and Ready "
                      f"{ready - lagging:.0f} s after it (peak {peak}); {len(sharing)} replicas captioned jobs of it")
    for what, at in (("asked", desired), ("Ready", ready)):
        record(f"KEDA: captioner lag > {(SCALED - 1) * THRESHOLD} -> {SCALED} replicas {what}", at - lagging,
               counted=False)
    for pod in stage_pods()[STAGE.name]:
        if pod["metadata"]["name"] not in before and (condition(pod, "Ready") or {}).get("status") == "True":
            scheduled = ts(condition(pod, "PodScheduled")["lastTransitionTime"])
            up = ts(condition(pod, "Ready")["lastTransitionTime"])
            record(f"KEDA: new captioner pod scheduled -> Ready: {pod['metadata']['name']}",
                   (up - scheduled).total_seconds(), counted=False)
    assert peak >= SCALED and len(sharing) >= SCALED, (peak, sharing)


def test_captioner_scales_back_in_after_the_burst(scaling, chaos):
    """Once the lag drained, KEDA's HPA brings the captioner back to one replica (minReplicaCount)."""
    watch = scaling["watch"]
    out_at = scaling.get("out_at")
    assert out_at, "the scale-out test did not run"

    def one_replica():
        last = watch.samples[-1]
        return last["at"] > out_at and last["desired"] == 1 and len(stage_pods()[STAGE.name]) == 1

    wait_until("the captioner back at one replica", one_replica, 900)
    drained = watch.first(lambda s: s["lag"] <= THRESHOLD, after=out_at)
    back = watch.first(lambda s: s["desired"] == 1, after=out_at)
    assert drained and back and drained <= back, (drained, back)
    record(f"KEDA: captioner lag <= {THRESHOLD} -> back to 1 replica", back - drained, counted=False)
    burst = next(f for f in chaos["faults"] if f.kind == "KEDA burst")
    burst.evidence += f"; lag <= {THRESHOLD} at +{drained - burst.at:.0f} s, 1 replica {back - drained:.0f} s later"

"""``kubectl drain`` of the node that runs the generator, under the steady load (the session's ``chaos``
fixture): two generator replicas on the spare real node (values-drain.yaml), the drain evicts them through
the Eviction API, which the chart's PodDisruptionBudget makes wait until the first replacement is Ready on
the other node. What the drain did to the jobs is counted in test_cluster_tally.py."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from chaos import Fault, inflight
from conftest import (BIN, KUBECONFIG, NAMESPACE, NODE, RELEASE, ROOT, SPARE_NODE, VALUES, all_ready, burst,
                      get_json, helm, is_ready, kubectl, record, stage_pods, wait_until)

DRAIN_VALUES = Path(__file__).with_name("values-drain.yaml")
PDB_REFUSAL = "Cannot evict pod as it would violate the pod's disruption budget"


def _ready_generators() -> list[dict]:
    """The generator's Ready pods (terminating ones left out)."""
    return [pod for pod in stage_pods()["generator"] if is_ready(pod)]


def _two_ready(node: str | None = None) -> list[dict] | None:
    """Two Ready generators (on ``node``, when given)."""
    ready = _ready_generators()
    return ready if len(ready) == 2 and all(node in (None, p["spec"]["nodeName"]) for p in ready) else None


class ReadyWatch(threading.Thread):
    """The generator's Ready, not terminating pods, sampled every half second."""

    def __init__(self):
        super().__init__(daemon=True, name="ready-generators")
        self.counts: list[int] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.5):
            self.counts.append(len(_ready_generators()))

    def stop(self) -> list[int]:
        self._stop_event.set()
        self.join(30)
        return self.counts


def test_drain_of_the_generators_node_honours_its_disruption_budget(chaos):
    started = time.monotonic()
    helm("upgrade", RELEASE, str(ROOT / "helm" / "deskgen"), "-n", NAMESPACE, "-f", str(VALUES),
         "-f", str(DRAIN_VALUES), "--wait", "--timeout", "10m", timeout=660)
    pods = wait_until("two Ready generators", _two_ready, 600)
    assert {p["spec"]["nodeName"] for p in pods} == {SPARE_NODE}, [(p["metadata"]["name"], p["spec"]["nodeName"]) for p in pods]
    pdb = get_json("poddisruptionbudget", "-n", NAMESPACE, f"{RELEASE}-generator")
    assert pdb["spec"]["maxUnavailable"] == 1 and pdb["status"]["disruptionsAllowed"] == 1, pdb["status"]

    # Drained while a pod on the spare node holds jobs (read across the two pod bridges).
    def holding():
        gauges = {p["metadata"]["name"]: inflight(p, "generator") or 0 for p in _ready_generators()}
        return gauges if sum(gauges.values()) else None

    burst(chaos, "generator")
    gauges = wait_until("a generator on the spare node holds jobs", holding, 300, interval=0.2)
    fault = Fault("drain", SPARE_NODE, "+".join(sorted(gauges)), time.time(), sum(gauges.values()))
    chaos["faults"].append(fault)
    watch = ReadyWatch()
    watch.start()
    drain = subprocess.run([str(BIN / "kubectl"), "--kubeconfig", str(KUBECONFIG), "drain", SPARE_NODE,
                            "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=600s"],
                           capture_output=True, text=True, timeout=660)
    counts = watch.stop()
    drained_s = time.time() - fault.at
    refusals = drain.stdout.count(PDB_REFUSAL) + drain.stderr.count(PDB_REFUSAL)
    fault.evidence = (f"generator gauges {gauges}; drain {drained_s:.0f} s, {refusals} eviction(s) refused by the "
                      f"PDB, Ready generators during it {min(counts, default=0)}–{max(counts, default=0)}")
    try:
        assert drain.returncode == 0, drain.stdout[-3000:] + drain.stderr[-3000:]
        # The budget held the second eviction back until a replacement was Ready: never no generator at all.
        assert refusals >= 1, drain.stdout[-3000:] + drain.stderr[-3000:]
        assert counts and min(counts) >= 1, counts
        wait_until("two Ready generators on the other node", lambda: _two_ready(NODE), 600)
        node = get_json("node", SPARE_NODE)
        assert node["spec"].get("unschedulable") is True
        left = get_json("pods", "-n", NAMESPACE, "--field-selector", f"spec.nodeName={SPARE_NODE}")["items"]
        assert not left, [p["metadata"]["name"] for p in left]
    finally:
        kubectl("uncordon", SPARE_NODE)
    record(f"drain of the generator's node: {refusals} evictions refused by the PDB, "
           f"Ready generators >= {min(counts, default=0)}", drained_s, counted=False)
    # Back to the release's own values (one generator, no toleration of the spare node) for the faults after.
    helm("upgrade", RELEASE, str(ROOT / "helm" / "deskgen"), "-n", NAMESPACE, "-f", str(VALUES),
         "--wait", "--timeout", "10m", timeout=660)
    wait_until("one Ready pod per stage", all_ready, 900)
    record("drain test in all (two rollouts, the drain, uncordon)", time.monotonic() - started)

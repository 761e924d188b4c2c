"""`make k8s-demo`: on the running local cluster (make k8s-up), install the chart the way the cluster
tests do (dev Kafka and S3 in the cluster, tiny dev weights from S3), send the sample photos from a
pod inside the cluster and print each job's terminal result."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))

from conftest import NAMESPACE, install_release, job_logs, kubectl, submit_job  # noqa: E402
from test_cluster import _samples  # noqa: E402

from deskgen.common.cli import format_result  # noqa: E402


def main() -> int:
    print("==> dev Kafka and S3 in the cluster, dev weights uploaded, chart installed (helm --wait)", flush=True)
    release = install_release()
    print("==> submitting a desk drawing, a coffee photo and a corrupt file from a pod", flush=True)
    submit_job("demo-submit", _samples(), {"desk.png": 1, "coffee.jpg": 1, "corrupt.jpg": 1}, watch=True,
               tag=release["tag"])
    kubectl("-n", NAMESPACE, "wait", "job/demo-submit", "--for=condition=complete", "--timeout=1200s", timeout=1260)
    for line in job_logs("demo-submit")[3:]:
        print(format_result(json.loads(line)))
    print(f"==> pods: k8s/cluster.sh kubectl -n {NAMESPACE} get pods -o wide; stop with make k8s-down")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env bash
# `make k8s-test`: build what is missing (Kubernetes, KWOK, Helm, KEDA, the images), start the local
# cluster, load the images, install KEDA, run k8s/tests against the chart, print the timing table, stop the
# cluster again (by PID; the machine's network and sysctls restored). DESKGEN_K8S_KEEP=1 keeps it up.
# shellcheck source=../stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../stack/lib.sh" k8s
PY="${PY:-.venv/bin/python}"
PHASES=.cache/k8s/timings.tsv  # k8s/tests add their rows and print the table
mkdir -p .cache/k8s && : > "$PHASES" && rm -f .cache/k8s/faults.txt .cache/k8s/faults.png

phase "build Kubernetes, KWOK, Helm (cached)" k8s/build-tools.sh
phase "build images (base, wheels, stages, dev deps)" k8s/images.sh build
[[ "${DESKGEN_K8S_KEEP:-}" == 1 ]] || trap 'printf "\n==== k8s: cluster down ====\n"; k8s/cluster.sh down || true' EXIT
phase "cluster up (3 nodes Ready: 2 real, 1 KWOK)" k8s/cluster.sh up
phase "load images into containerd" k8s/images.sh load
phase "KEDA installed (operator, metrics adapter, external metrics API Available)" k8s/keda.sh install
k8s/images.sh sizes
"$PY" -m pytest k8s/tests -p no:cacheprovider -o timeout=3600 -v "$@"

#!/usr/bin/env bash
# `make k8s-test`: build what is missing (Kubernetes, KWOK, Helm, the images), start the local
# cluster, load the images, run k8s/tests against the chart, print the timing table, stop the
# cluster again (by PID; the machine's network and sysctls restored). DESKGEN_K8S_KEEP=1 keeps it up.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PY:-.venv/bin/python}"
TIMINGS=.cache/k8s/timings.tsv
mkdir -p .cache/k8s && : > "$TIMINGS"

phase() {  # name command...: runs the command and records its duration
  local name="$1" started=$SECONDS; shift
  printf '\n==== k8s: %s  [%s] ====\n' "$name" "$(date -u +%H:%M:%S)"
  "$@"
  printf '%s\t%s\n' "$name" "$((SECONDS - started))" >> "$TIMINGS"
}

phase "build Kubernetes, KWOK, Helm (cached)" k8s/build-tools.sh
phase "build images (base, wheels, stages, dev deps)" k8s/images.sh build
[[ "${DESKGEN_K8S_KEEP:-}" == 1 ]] || trap 'printf "\n==== k8s: cluster down ====\n"; k8s/cluster.sh down || true' EXIT
phase "cluster up (2 nodes Ready)" k8s/cluster.sh up
phase "load images into containerd" k8s/images.sh load
k8s/images.sh sizes
"$PY" -m pytest k8s/tests -p no:cacheprovider -o timeout=3600 -v "$@"

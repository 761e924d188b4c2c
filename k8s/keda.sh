#!/usr/bin/env bash
# KEDA (operator + metrics adapter) on the running local cluster (k8s/cluster.sh up), from the binaries and
# the config/ tree k8s/build-tools.sh builds from the Go module proxy. Each step's time is logged.
#   k8s/keda.sh install     image (FROM scratch) into containerd, CRDs + RBAC + Deployments + APIService
#                           applied (k8s/keda/kustomization.yaml), waits until the external metrics API
#                           (external.metrics.k8s.io, through the API server's aggregation layer) is Available
#   k8s/keda.sh uninstall   the same objects deleted
# shellcheck source=../stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../stack/lib.sh" keda
export CONTAINERS_CONF="$ROOT/k8s/containers.conf"
CACHE="$ROOT/.cache/k8s"
BIN="$CACHE/bin"
VERSION="$(cat "$CACHE/keda.version" 2>/dev/null)" || die "KEDA is not built: run k8s/build-tools.sh keda"
IMAGE="docker.io/deskgen/keda:${VERSION#v}"
OPERATOR_IP=10.96.100.20  # the operator's Service (the adapter reaches it by address: no cluster DNS)
kctl() { "$ROOT/k8s/cluster.sh" kubectl "$@"; }

image() {
  # Rebuilt and reloaded only when the binaries changed (their digest is the marker).
  local digest marker="$CACHE/loaded/keda" ctx="$CACHE/keda-image"
  digest="$(cat "$BIN/keda-operator" "$BIN/keda-adapter" | sha256sum | cut -d' ' -f1)"
  if [[ "$(cat "$marker" 2>/dev/null)" == "$digest" ]] \
     && grep -qx "$IMAGE" <<< "$("$ROOT/k8s/cluster.sh" ctr images ls -q)"; then return; fi
  rm -rf "$ctx" && mkdir -p "$ctx" "$CACHE/loaded"
  cp "$BIN/keda-operator" "$ctx/keda" && cp "$BIN/keda-adapter" "$ctx/keda-adapter"
  podman build --quiet --network host --format docker -f "$ROOT/k8s/images/keda.Dockerfile" -t "$IMAGE" "$ctx" >/dev/null
  rm -rf "$ctx"
  podman save --format docker-archive "$IMAGE" | "$ROOT/k8s/cluster.sh" ctr images import - >/dev/null
  echo "$digest" > "$marker"
}

render() {
  local overlay="$CACHE/keda-overlay"
  mkdir -p "$overlay"
  sed -e "s/KEDA_TAG/${VERSION#v}/" -e "s/OPERATOR_IP/$OPERATOR_IP/" "$ROOT/k8s/keda/kustomization.yaml" \
    > "$overlay/kustomization.yaml"
  kctl kustomize "$overlay"
}

apply() {
  # Server-side: the CRDs are too large for the last-applied annotation of a client-side apply.
  render | kctl apply --server-side --force-conflicts -f - >/dev/null
}

install() {
  phase "KEDA image into containerd" image
  phase "KEDA manifests applied" apply
  phase "KEDA operator and metrics adapter Ready, external metrics API Available" ready
}

ready() {
  kctl -n keda rollout status deployment/keda-operator deployment/keda-metrics-apiserver --timeout=600s >/dev/null
  kctl wait apiservice/v1beta1.external.metrics.k8s.io --for=condition=Available --timeout=300s >/dev/null
  kctl get --raw /apis/external.metrics.k8s.io/v1beta1 >/dev/null
}

case "${1:-}" in
  install) install ;;
  uninstall) render | kctl delete --ignore-not-found --wait=false -f - >/dev/null ;;
  *) die "usage: $0 install|uninstall" ;;
esac

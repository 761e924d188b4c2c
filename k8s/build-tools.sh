#!/usr/bin/env bash
# Builds the local cluster's binaries into .cache/k8s/bin (git-ignored); skips what is already there.
#   Kubernetes v1.34.4 (apiserver, controller-manager, scheduler, kubelet, kube-proxy, kubectl) from the Go
#   module proxy, the pause binary from the same module, KWOK, Helm, and KEDA v2.21.0 (operator + metrics
#   adapter, with its config/ tree for the CRDs and RBAC).
# Needs Go >= 1.24 and gcc (stack/system-deps.sh k8s). Each step's time is logged (and appended to $PHASES
# when set; 0 s: cached).
# shellcheck source=../stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../stack/lib.sh" k8s-build
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
KWOK_VERSION="v0.8.0"
# v2.21.1 needs a newer Go than the machine's 1.26; v2.21.0 builds with it.
KEDA_VERSION="v2.21.0"
CACHE="$ROOT/.cache/k8s"
BIN="$CACHE/bin"
COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
mkdir -p "$BIN"

build_kubernetes() {
  local have=1 c
  for c in "${COMMANDS[@]}"; do
    # Whole outputs, not `| grep -q` (an early exit fails the pipe under pipefail).
    if [[ $c == kubectl ]]; then
      [[ "$("$BIN/$c" version --client 2>/dev/null)" == *"$K8S_VERSION"* ]] || have=0
    else
      [[ "$("$BIN/$c" --version 2>/dev/null)" == *"$K8S_VERSION"* ]] || have=0
    fi
  done
  if [[ $have == 1 && -x "$BIN/pause" ]]; then return; fi
  log "building Kubernetes $K8S_VERSION from the Go module proxy (cold: ~15 min on 2 cores)"
  local mod="$CACHE/mod" gomod dir staging minor="${K8S_VERSION#v1.}"
  minor="${minor%%.*}"
  rm -rf "$mod" && mkdir -p "$mod"
  gomod="$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
  dir="$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')"
  # The kubernetes module replaces its staging modules with local folders; point them at their published
  # versions instead (v0.<minor>.<patch> for v1.<minor>.<patch>).
  staging=$(sed -n 's#^\s*\(k8s.io/[A-Za-z0-9_.-]*\) => \./staging/.*#\1#p' "$gomod")
  {
    echo "module deskgen.local/k8sbuild"
    echo
    sed -n 's/^go \(.*\)/go \1/p' "$gomod"
    echo "godebug default=go1.24"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    for s in $staging; do echo "replace $s => $s v0.${K8S_VERSION#v1.}"; done
  } > "$mod/go.mod"
  {
    echo "//go:build tools"
    echo "package tools"
    echo "import ("
    for c in "${COMMANDS[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$c\""; done
    echo ")"
  } > "$mod/tools.go"
  (cd "$mod" && go mod tidy)
  local pkgs=() ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  ld+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ld+=" -X k8s.io/component-base/version.gitTreeState=clean"
  ld+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  ld+=" -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  for c in "${COMMANDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  (cd "$mod" && CGO_ENABLED=0 go build -o "$BIN/" -ldflags "$ld" "${pkgs[@]}")
  gcc -Os -static -o "$BIN/pause" "$dir/build/pause/linux/pause.c"
  cp -r "$dir/build/pause/linux/pause.c" "$CACHE/" 2>/dev/null || true
}

build_kwok() {
  if [[ -x "$BIN/kwok" && -f "$CACHE/kwok-stages.yaml" ]]; then return; fi
  log "building KWOK $KWOK_VERSION"
  GOBIN="$BIN" go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  local dir
  dir="$(cd "$CACHE" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')"
  # KWOK exits with "no stages found" without its stage definitions (node heartbeat, pod lifecycle).
  local stage
  for stage in "$dir"/kustomize/stage/node/{fast,heartbeat}/*.yaml "$dir"/kustomize/stage/pod/fast/*.yaml; do
    [[ "$stage" == */kustomization.yaml ]] && continue
    echo "---"; cat "$stage"; echo
  done > "$CACHE/kwok-stages.yaml"
}

build_keda() {
  # The stamp names the version: a cached build of another version is rebuilt.
  if [[ -x "$BIN/keda-operator" && -x "$BIN/keda-adapter" && -d "$CACHE/keda-config" \
        && "$(cat "$CACHE/keda.version" 2>/dev/null)" == "$KEDA_VERSION" ]]; then return; fi
  log "building KEDA $KEDA_VERSION (operator + metrics adapter) from the Go module proxy (cold: ~10 min on 2 cores)"
  local dir src="$CACHE/keda-src" ld
  dir="$(cd "$CACHE" && GOFLAGS=-mod=mod go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')"
  # Built as its own main module (its go.mod, go.sum and replaces), from a writable copy of the module.
  rm -rf "$src" && cp -r "$dir" "$src" && chmod -R u+w "$src"
  ld="-s -w -X=github.com/kedacore/keda/v2/version.Version=${KEDA_VERSION#v} -X=github.com/kedacore/keda/v2/version.GitCommit=$KEDA_VERSION"
  (cd "$src" && CGO_ENABLED=0 go build -ldflags "$ld" -o "$BIN/keda-operator" ./cmd/operator)
  (cd "$src" && CGO_ENABLED=0 go build -ldflags "$ld" -o "$BIN/keda-adapter" ./cmd/adapter)
  rm -rf "$CACHE/keda-config" && cp -r "$src/config" "$CACHE/keda-config"
  rm -rf "$src"
  echo "$KEDA_VERSION" > "$CACHE/keda.version"
}

build_helm() {
  # The pinned Helm of the chart checks, in their place (.cache/tools/bin).
  "$ROOT/helm/chart-check.sh" --helm-only
  ln -sf "$ROOT/.cache/tools/bin/helm" "$BIN/helm"
}

case "${1:-all}" in
  kubernetes | kwok | helm | keda) phase "$1" "build_$1" ;;
  all) phase kwok build_kwok; phase helm build_helm; phase kubernetes build_kubernetes; phase keda build_keda ;;
  *) die "usage: $0 [all|kubernetes|kwok|helm|keda]" ;;
esac

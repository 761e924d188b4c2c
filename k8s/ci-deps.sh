#!/usr/bin/env bash
# System packages for the local cluster and the image builds (Debian 12, root), and a Go >= 1.24
# toolchain for k8s/build-tools.sh (from the Go module proxy when the machine has none). Idempotent.
set -euo pipefail
PACKAGES=(podman buildah runc debootstrap uidmap fuse-overlayfs slirp4netns containerd etcd-server iptables
          nftables conntrack containernetworking-plugins prometheus openssl gcc libc6-dev)
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "k8s-deps: installing ${missing[*]}"
  apt-get update -qq
  # No daemons from packages (containerd, etcd and prometheus would start one): the scripts start their own.
  policy=/usr/sbin/policy-rc.d
  created=0
  if [[ ! -e "$policy" ]]; then printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  ((created)) && rm -f "$policy"
fi

go_ok() { command -v go >/dev/null && go version | grep -qE 'go1\.(2[4-9]|[3-9][0-9])'; }
if ! go_ok; then
  version=go1.24.13
  echo "k8s-deps: fetching the Go toolchain $version from the Go module proxy into /usr/local/go"
  tmp="$(mktemp -d)"
  curl -fsSL "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-$version.linux-amd64.zip" -o "$tmp/go.zip"
  (cd "$tmp" && python3 -c "import zipfile; zipfile.ZipFile('go.zip').extractall('.')")
  rm -rf /usr/local/go && mv "$tmp/golang.org/toolchain@v0.0.1-$version.linux-amd64" /usr/local/go
  chmod -R a+rX /usr/local/go && chmod +x /usr/local/go/bin/* /usr/local/go/pkg/tool/linux_amd64/*
  rm -rf "$tmp"
  ln -sf /usr/local/go/bin/go /usr/local/bin/go
fi
go version

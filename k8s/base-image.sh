#!/usr/bin/env bash
# Builds localhost/deskgen-base:bookworm (Debian 12 minbase + Python 3.11 + venv) with debootstrap, for
# machines without a container registry. Users build the images FROM a public base instead.
# shellcheck source=../stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../stack/lib.sh" base-image
export CONTAINERS_CONF="$ROOT/k8s/containers.conf"
IMAGE="localhost/deskgen-base:bookworm"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if podman image exists "$IMAGE"; then exit 0; fi
dir="$ROOT/.cache/k8s/rootfs"
rm -rf "$dir" && mkdir -p "$dir"
log "debootstrap bookworm from $MIRROR"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$dir" "$MIRROR" >/dev/null
rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin
tar -C "$dir" -c . | podman import --change 'CMD ["/bin/bash"]' - "$IMAGE" >/dev/null
rm -rf "$dir"
log "$IMAGE $(podman image inspect --format '{{.Size}}' "$IMAGE" | numfmt --to=iec)"

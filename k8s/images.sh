#!/usr/bin/env bash
# Builds the deskgen stage images (docker/Dockerfile, one target per stage of common/topology.py) and the
# dev-dependency images (k8s/images/) with podman FROM the debootstrapped base (k8s/base-image.sh),
# installing Python packages from a wheel folder (.cache/wheels) mounted into the build, so the torch
# wheels are fetched once (from pip's cache after `make setup`) and the torch layer is shared by the
# images built on it. Each step's time is logged (and appended to $PHASES when set).
#   k8s/images.sh build   build every image (cached layers are reused)
#   k8s/images.sh load    copy them into the cluster nodes' containerd (k8s/cluster.sh must be up)
#   k8s/images.sh sizes   print each image's size
# shellcheck source=../stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../stack/lib.sh" images
export CONTAINERS_CONF="$ROOT/k8s/containers.conf"
PY="$(realpath -s "${PY:-$ROOT/.venv/bin/python}")"
BASE="localhost/deskgen-base:bookworm"
TAG="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}/\1/p' "$ROOT/helm/deskgen/Chart.yaml")"
WHEELS="${DESKGEN_WHEELS:-$ROOT/.cache/wheels}"  # DESKGEN_WHEELS: a wheel folder to reuse
# "stage image-target" per stage of the topology, in pipeline order.
mapfile -t STAGES < <("$PY" -c 'from deskgen.common import topology
for stage in topology.STAGES.values(): print(stage.name, stage.image_target())')
((${#STAGES[@]})) || die "no stages from common/topology.py (PY=$PY)"
STAGE_IMAGES=("${STAGES[@]%% *}")
DEV_IMAGES=(kafka s3proxy)
name() { echo "docker.io/deskgen/$1:$TAG"; }

wheels() {
  # Every pinned dependency of every image (docker/requirements.py) as a wheel (sdists built once); pip's
  # cache makes this a copy after `make setup`.
  { "$PY" docker/requirements.py classifier torch; printf 'setuptools>=68\nwheel\n'; } > "$ROOT/.cache/requirements.txt"
  mkdir -p "$WHEELS"
  local stamp="$WHEELS/.requirements.sha256" digest
  digest="$(sha256sum < "$ROOT/.cache/requirements.txt")"
  [[ -f "$stamp" && "$(cat "$stamp")" == "$digest" ]] && return
  "$PY" -m pip wheel --quiet --disable-pip-version-check --no-index --find-links "$WHEELS" -w "$WHEELS" \
    -r "$ROOT/.cache/requirements.txt" 2>/dev/null \
  || "$PY" -m pip wheel --quiet --disable-pip-version-check -w "$WHEELS" -r "$ROOT/.cache/requirements.txt"
  echo "$digest" > "$stamp"
}

build_one() {  # image target: one stage of docker/Dockerfile
  podman build --quiet --layers --network host --format docker -f docker/Dockerfile --target "$2" \
    --build-arg BASE="$BASE" --build-arg PIP_OPTIONS="--no-index --find-links /wheels" \
    --volume "$WHEELS:/wheels:ro" -t "$(name "$1")" "$ROOT" >/dev/null
}

build_stages() {
  phase "base image" "$ROOT/k8s/base-image.sh"
  phase "wheels" wheels
  phase "detectors" env PY="$PY" bash "$ROOT/stack/detectors.sh"  # the captioner image copies them
  local stage image target
  for stage in "${STAGES[@]}"; do
    read -r image target <<< "$stage"
    phase "image $image" build_one "$image" "$target"
  done
}

build_dev() {
  # Kafka and S3Proxy from the local stack's Maven jars (fetched by `make stack-up` if not yet there).
  local ctx="$ROOT/.cache/k8s/dev-context" component
  rm -rf "$ctx" && mkdir -p "$ctx"
  for component in kafka s3proxy; do
    (cd "$ROOT/stack" && "$PY" -c "import servers; servers.classpath('$component')")
    cp -r "$ROOT/.cache/stack/$component/lib" "$ctx/$component-lib"
  done
  cp "$ROOT"/k8s/images/*.sh "$ctx/"
  for component in "${DEV_IMAGES[@]}"; do
    phase "image $component" podman build --quiet --layers --network host --format docker \
      -f "$ROOT/k8s/images/dev.Dockerfile" --target "$component" --build-arg BASE="$BASE" \
      -t "$(name "$component")" "$ctx" >/dev/null
  done
}

load() {
  # Every image into the first node's containerd. The second (tainted) node runs only the pods that tolerate
  # its taint (the drain test's generator): on a cluster just up its store becomes a hard-linked copy of
  # the first's (k8s/cluster.sh share-images: no disk, seconds), else the generator is imported there too.
  load_into deskgen-node "${STAGE_IMAGES[@]}" "${DEV_IMAGES[@]}"
  [[ -n "$(stale deskgen-node2 generator)" ]] || return 0
  if "$ROOT/k8s/cluster.sh" share-images; then
    rm -rf "$ROOT/.cache/k8s/loaded/deskgen-node2" && cp -r "$ROOT/.cache/k8s/loaded/deskgen-node" "$ROOT/.cache/k8s/loaded/deskgen-node2"
  else
    load_into deskgen-node2 generator
  fi
}

stale() {  # node image...: those whose podman image is not the one last imported there (a marker per node
  # and image records the podman image ID), or that the node's store lacks
  local node="$1" image present
  shift
  present="$("$ROOT/k8s/cluster.sh" ctr-on "$node" images ls -q)"
  for image in "$@"; do
    [[ "$(cat "$ROOT/.cache/k8s/loaded/$node/$image" 2>/dev/null)" == "$(image_id "$image")" ]] \
      && grep -qx "$(name "$image")" <<< "$present" || echo "$image"
  done
}

image_id() { podman image inspect --format '{{.Id}}' "$(name "$1")"; }

load_into() {  # node image...
  # One multi-image archive, so the torch layer the captioner and generator share is copied once.
  local node="$1" started=$SECONDS names=() image refs=()
  shift
  mapfile -t names < <(stale "$node" "$@")
  ((${#names[@]})) || return 0
  for image in "${names[@]}"; do refs+=("$(name "$image")"); done
  # podman spools each layer to a temporary file before it enters the archive (the torch layer: ~7 GB), so
  # the spool goes to RAM (/dev/shm) when it has room for the largest image, not to the disk the node's
  # store is filling.
  local spool=/var/tmp largest shm imported=0
  largest="$(podman image inspect --format '{{.Size}}' "${refs[@]}" | sort -n | tail -1)"
  shm="$(df --output=avail -B1 /dev/shm 2>/dev/null | tail -1)"
  ((${shm:-0} > largest * 3 / 2)) && spool=/dev/shm
  spool="$(mktemp -d "$spool/deskgen-images.XXXXXX")"
  TMPDIR="$spool" podman save --multi-image-archive --format docker-archive "${refs[@]}" \
    | "$ROOT/k8s/cluster.sh" ctr-on "$node" images import - >/dev/null && imported=1
  rm -rf "$spool"
  ((imported)) || die "could not load ${names[*]} into $node ($(df -h --output=avail "$ROOT/.cache/k8s" | tail -1 | tr -d ' ') free on the disk of .cache/k8s)"
  # Once unpacked, the layer tarballs go (containers run from the snapshots), as CRI's discard_unpacked_layers
  # does for pulled images: each node's store then holds the images once, not twice (~7 GB less per node).
  "$ROOT/k8s/cluster.sh" ctr-on "$node" content prune references >/dev/null
  mkdir -p "$ROOT/.cache/k8s/loaded/$node"
  for image in "${names[@]}"; do image_id "$image" > "$ROOT/.cache/k8s/loaded/$node/$image"; done
  log "${names[*]} loaded into the containerd of $node in $((SECONDS - started)) s"
}

sizes() {
  local image
  for image in "${STAGE_IMAGES[@]}" "${DEV_IMAGES[@]}"; do
    printf '%-12s %s\n' "$image" "$(podman image inspect --format '{{.Size}}' "$(name "$image")" | numfmt --to=si)"
  done
}

case "${1:-build}" in
  build) build_stages; build_dev ;;
  build-stages) build_stages ;;
  build-dev) build_dev ;;
  load) load ;;
  sizes) sizes ;;
  tag) echo "$TAG" ;;
  *) log "usage: $0 build|load|sizes"; exit 2 ;;
esac

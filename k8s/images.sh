#!/usr/bin/env bash
# Builds the deskgen images (docker/cpu.Dockerfile, docker/gpu.Dockerfile) and the dev-dependency
# images (k8s/images/) with podman FROM the debootstrapped base (k8s/base-image.sh), installing
# Python packages from a wheel folder (.cache/wheels) mounted into the build, so the torch wheels are
# fetched once (from pip's cache after `make setup`) and the torch layer is shared by two images.
#   k8s/images.sh build   build every image (cached layers are reused)
#   k8s/images.sh load    copy them into the cluster's containerd (k8s/cluster.sh must be up)
#   k8s/images.sh sizes   print each image's size
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CONTAINERS_CONF="$ROOT/k8s/containers.conf"
PY="$(realpath -s "${PY:-$ROOT/.venv/bin/python}")"  # absolute: build_dev runs it from stack/
BASE="localhost/deskgen-base:bookworm"
TAG="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}/\1/p' "$ROOT/helm/deskgen/Chart.yaml")"
WHEELS="${DESKGEN_WHEELS:-$ROOT/.cache/wheels}"  # DESKGEN_WHEELS: a wheel folder to reuse
STAGE_IMAGES=(classifier captioner generator)
DEV_IMAGES=(kafka s3proxy)
log() { printf 'images: %s\n' "$*" >&2; }
name() { echo "docker.io/deskgen/$1:$TAG"; }

wheels() {
  # Every pinned dependency as a wheel (sdists built once); pip's cache makes this a copy after `make setup`.
  "$PY" - <<'PYEOF' > "$ROOT/.cache/requirements.txt"
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"] + ["setuptools>=68", "wheel"]))
PYEOF
  mkdir -p "$WHEELS"
  local stamp="$WHEELS/.requirements.sha256" digest
  digest="$(sha256sum < "$ROOT/.cache/requirements.txt")"
  [[ -f "$stamp" && "$(cat "$stamp")" == "$digest" ]] && return
  "$PY" -m pip wheel --quiet --disable-pip-version-check --no-index --find-links "$WHEELS" -w "$WHEELS" \
    -r "$ROOT/.cache/requirements.txt" 2>/dev/null \
  || "$PY" -m pip wheel --quiet --disable-pip-version-check -w "$WHEELS" -r "$ROOT/.cache/requirements.txt"
  echo "$digest" > "$stamp"
}

build_one() {  # image dockerfile [target]
  local started=$SECONDS
  podman build --quiet --layers --network host --format docker -f "$2" ${3:+--target "$3"} \
    --build-arg BASE="$BASE" --build-arg PIP_OPTIONS="--no-index --find-links /wheels" \
    --volume "$WHEELS:/wheels:ro" -t "$(name "$1")" "$ROOT" >/dev/null
  log "$1 built in $((SECONDS - started)) s"
}

build_stages() {
  cd "$ROOT"
  local started=$SECONDS
  "$ROOT/k8s/base-image.sh"
  log "base image ready in $((SECONDS - started)) s"
  started=$SECONDS
  wheels
  log "wheels ready in $((SECONDS - started)) s"
  build_one generator docker/gpu.Dockerfile
  build_one captioner docker/cpu.Dockerfile captioner
  build_one classifier docker/cpu.Dockerfile classifier
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
    local started=$SECONDS
    podman build --quiet --layers --network host --format docker -f "$ROOT/k8s/images/dev.Dockerfile" --target "$component" \
      --build-arg BASE="$BASE" -t "$(name "$component")" "$ctx" >/dev/null
    log "$component built in $((SECONDS - started)) s"
  done
}

load() {
  # One multi-image archive, so the torch layer the captioner and generator share is copied once; a
  # marker per image records the podman image ID last imported, so unchanged images are skipped.
  local image id names=() ids=() started=$SECONDS present
  mkdir -p "$ROOT/.cache/k8s/loaded"
  present="$("$ROOT/k8s/cluster.sh" ctr images ls -q)"
  for image in "${STAGE_IMAGES[@]}" "${DEV_IMAGES[@]}"; do
    id="$(podman image inspect --format '{{.Id}}' "$(name "$image")")"
    if [[ "$(cat "$ROOT/.cache/k8s/loaded/$image" 2>/dev/null)" != "$id" ]] || ! grep -qx "$(name "$image")" <<< "$present"; then
      names+=("$image") ids+=("$id")
    fi
  done
  ((${#names[@]})) || return 0
  local refs=() i
  for image in "${names[@]}"; do refs+=("$(name "$image")"); done
  podman save --multi-image-archive --format docker-archive "${refs[@]}" \
    | "$ROOT/k8s/cluster.sh" ctr images import - >/dev/null
  for i in "${!names[@]}"; do echo "${ids[$i]}" > "$ROOT/.cache/k8s/loaded/${names[$i]}"; done
  log "${names[*]} loaded into containerd in $((SECONDS - started)) s"
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

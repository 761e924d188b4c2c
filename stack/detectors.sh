#!/usr/bin/env bash
# The object detectors' files (common/detect), fetched once at set-up and never at run time: each npm package
# at its pinned version (`npm pack`), checked against its SHA-256, then cut and converted by
# `python -m deskgen.common.detect.prepare` into DESKGEN_CAPTIONER_DETECTOR_DIR (default .cache/detectors).
# Idempotent: nothing is fetched or converted when the folder already matches these pins.
#   stack/detectors.sh            run by `make setup` and by k8s/images.sh before the images are built
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" detectors
PY="${PY:-$ROOT/.venv/bin/python}"
OUT="${DESKGEN_CAPTIONER_DETECTOR_DIR:-$ROOT/.cache/detectors}"
# package@version  tarball  sha256
PACKAGES=(
  "@mediapipe/objectron@0.4.1675468480 mediapipe-objectron-0.4.1675468480.tgz fc3e37b326b05e8f596099c90b3e0931b05a56cd3160b9ac450b621794bac94c"
  "@vladmandic/human@3.3.6 vladmandic-human-3.3.6.tgz 425e9c51dbbca0c8934362b170cb0d54c2529c11c654b3c03092b16e9d6ad3f7"
)
stamp="$OUT/.pins"
pins="$(printf '%s\n' "${PACKAGES[@]}"; sha256sum "$ROOT/common/detect/prepare.py" "$ROOT/common/detect/tfjs.py" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$pins" && -f "$OUT/ssd-oidv4.tflite" && -f "$OUT/centernet-coco.onnx" ]]; then
  exit 0
fi
command -v npm >/dev/null || die "npm is needed to fetch the detectors (Debian: apt-get install npm)"
mkdir -p "$OUT/npm"
tarballs=()
for entry in "${PACKAGES[@]}"; do
  read -r spec tarball digest <<< "$entry"
  if ! echo "$digest  $OUT/npm/$tarball" | sha256sum --check --status 2>/dev/null; then
    log "npm pack $spec"
    (cd "$OUT/npm" && npm pack --silent "$spec" >/dev/null)
    echo "$digest  $OUT/npm/$tarball" | sha256sum --check --status \
      || die "$spec: $tarball does not have the pinned SHA-256 $digest"
  fi
  tarballs+=("$OUT/npm/$tarball")
done
"$PY" -m deskgen.common.detect.prepare "${tarballs[@]}" "$OUT"
echo "$pins" > "$stamp"

# shellcheck shell=bash
# The shell scripts' common preamble, sourced first thing (TAG: the name their log lines carry; required,
# since without an argument `source` would pass on the script's own first argument):
#   source "$(dirname "${BASH_SOURCE[0]}")/../stack/lib.sh" TAG
# Strict mode; ROOT is the repository root and the working directory; log and die; one phase timer.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
LOG_TAG="${1:?source stack/lib.sh with a log tag}"

log() { printf '%s: %s\n' "$LOG_TAG" "$*" >&2; }
die() { log "$*"; exit 1; }

# Phases: `phase NAME` ends the open phase and opens NAME (`phase ""` only ends it); `phase NAME COMMAND...`
# runs COMMAND as the phase NAME. An ended phase is logged and, when PHASES names a file, appended to it
# as NAME<TAB>SECONDS; `phase_table FILE...` prints such files as a table.
PHASE="" PHASE_STARTED=0

phase() {
  phase_end
  [[ -n "$1" ]] || return 0
  PHASE="$1" PHASE_STARTED=$SECONDS
  shift
  printf '\n==== %s  [%s, +%ds] ====\n' "$PHASE" "$(date -u +%H:%M:%S)" "$SECONDS"
  (($# == 0)) || { "$@"; phase_end; }
}

phase_end() {
  [[ -n "$PHASE" ]] || return 0
  local took=$((SECONDS - PHASE_STARTED))
  if [[ -n "${PHASES:-}" ]]; then printf '%s\t%s\n' "$PHASE" "$took" >> "$PHASES"; fi
  log "$PHASE: $took s"
  PHASE=""
}

phase_table() {
  awk -F '\t' 'NF >= 2 { printf "  %-58s %6d s  %5.1f min\n", $1, $2, $2 / 60 }' "$@" 2>/dev/null || true
}

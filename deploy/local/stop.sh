#!/usr/bin/env bash
# deploy/local/stop.sh — stops the local stack started by start.sh: SIGTERM
# by PID file, up to STOP_TIMEOUT (default 30) seconds to exit, then SIGKILL;
# removes the PID files. Data under .local/ is kept.
# Usage: deploy/local/stop.sh [kafka|clickhouse]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=deploy/local/lib.sh
source "$ROOT/deploy/local/lib.sh"

main() {
  local comps c
  comps=$(select_components "$@")
  lock_stack
  for c in $comps; do
    stop_component "$c"
  done
}

main "$@"

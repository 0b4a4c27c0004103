# shellcheck shell=bash
# deploy/local/lib.sh — shared helpers for the local-stack scripts
# (install.sh, start.sh, stop.sh). Source it after setting ROOT; it is not
# meant to be run on its own. Everything it touches lives under $ROOT/.local/.
#
# Layout:
#   .local/run/<component>.pid   PID files
#   .local/log/<component>.log   process logs
#   .local/kafka/                Kafka jars (libs/), data (data/), rendered config
#   .local/clickhouse/           ClickHouse data, tmp, user_files, rendered config
#   .local/geoip/country.mmdb    GeoIP country database
#   .local/user-agents/          uap-core regexes, crawler patterns (install.sh)

# shellcheck disable=SC2034 # the variables below are used by the sourcing scripts
: "${ROOT:?ROOT must be set before sourcing lib.sh}"

DEPLOY_DIR="$ROOT/deploy/local"
LOCAL_DIR="$ROOT/.local"
RUN_DIR="$LOCAL_DIR/run"
LOG_DIR="$LOCAL_DIR/log"

COMPONENTS=(kafka clickhouse)

# Ports (fixed: the rest of the project expects these).
KAFKA_HOST=127.0.0.1
KAFKA_PORT=9092
KAFKA_CONTROLLER_PORT=9093
CLICKHOUSE_HOST=127.0.0.1
CLICKHOUSE_HTTP_PORT=8123
CLICKHOUSE_TCP_PORT=9000

# Seconds start.sh waits for a component to become ready.
START_TIMEOUT="${START_TIMEOUT:-90}"
# Seconds stop.sh waits after SIGTERM before sending SIGKILL.
STOP_TIMEOUT="${STOP_TIMEOUT:-30}"

as_root() {
  if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

log() { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Seconds (one decimal) elapsed since an earlier $EPOCHREALTIME value.
elapsed_since() {
  awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}

# Serialises start.sh/stop.sh runs (e.g. test suites starting the stack in
# parallel): the second caller waits, then finds the stack already running.
# Held on fd 9 until the script exits; spawn() closes fd 9 for the servers.
lock_stack() {
  mkdir -p "$RUN_DIR"
  exec 9>"$RUN_DIR/stack.lock"
  flock -w 300 9 || die "another start.sh/stop.sh still holds $RUN_DIR/stack.lock after 300s"
}

# Validates an optional component argument; prints the components to act on.
select_components() {
  if [[ $# -eq 0 || -z "${1:-}" ]]; then
    printf '%s\n' "${COMPONENTS[@]}"
    return
  fi
  local c
  for c in "${COMPONENTS[@]}"; do
    if [[ "$1" == "$c" ]]; then
      printf '%s\n' "$c"
      return
    fi
  done
  die "unknown component '$1' (expected one of: ${COMPONENTS[*]})"
}

pid_file() { printf '%s/%s.pid\n' "$RUN_DIR" "$1"; }
log_file() { printf '%s/%s.log\n' "$LOG_DIR" "$1"; }

# A string that must appear in the process command line, so that a PID reused
# by an unrelated process (e.g. after a reboot) is not mistaken for ours.
cmdline_marker() {
  case "$1" in
    kafka | cluster-kafka*) printf 'kafka.Kafka' ;;
    clickhouse | cluster-clickhouse*) printf 'clickhouse' ;;
    cluster-zookeeper) printf 'QuorumPeerMain' ;;
    *) printf '%s' "$1" ;; # TraffSure services: the binary is named after the service
  esac
}

# True if PID exists and is not a zombie (an un-reaped dead child counts as dead).
pid_alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

# Prints the PID of a running component and succeeds, or fails silently.
running_pid() {
  local pf pid
  pf=$(pid_file "$1")
  [[ -s "$pf" ]] || return 1
  pid=$(<"$pf")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  pid_alive "$pid" || return 1
  local cmd
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ "$cmd" == *"$(cmdline_marker "$1")"* ]] || return 1
  printf '%s\n' "$pid"
}

# True if something accepts TCP connections on host:port (bash /dev/tcp, no nc).
port_open() {
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# wait_for TIMEOUT_S CHECK_CMD... — polls CHECK_CMD every 0.5 s until it
# succeeds (returns 0) or TIMEOUT_S elapses (returns 1). If the variable
# WAIT_PID is set and that process dies meanwhile, gives up at once (returns 2).
wait_for() {
  local timeout=$1; shift
  local deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    if "$@"; then return 0; fi
    if [[ -n "${WAIT_PID:-}" ]] && ! pid_alive "$WAIT_PID"; then
      return 2
    fi
    sleep 0.5
  done
  "$@"
}

# Prints an error naming the log file and its last 30 lines, then exits.
fail_with_log() {
  local component=$1 msg=$2 lf
  lf=$(log_file "$component")
  {
    printf 'error: %s: %s\n' "$component" "$msg"
    printf 'error: see %s — last 30 lines:\n' "$lf"
    tail -n 30 "$lf" 2>/dev/null | sed 's/^/  | /' || true
  } >&2
  exit 1
}

# Moves a log aside (one generation) once it exceeds 50 MiB.
rotate_log() {
  local lf
  lf=$(log_file "$1")
  if [[ -f "$lf" ]] && (($(stat -c %s "$lf") > 50 * 1024 * 1024)); then
    mv -f "$lf" "$lf.1"
  fi
}

# render_template SRC DST — copies SRC to DST replacing @LOCAL@ with the
# absolute .local path and @ROOT@ with the repo root.
render_template() {
  local esc_local esc_root
  esc_local=$(printf '%s' "$LOCAL_DIR" | sed 's/[\\&|]/\\&/g')
  esc_root=$(printf '%s' "$ROOT" | sed 's/[\\&|]/\\&/g')
  mkdir -p "$(dirname "$2")"
  sed -e "s|@LOCAL@|$esc_local|g" -e "s|@ROOT@|$esc_root|g" "$1" >"$2.tmp"
  mv -f "$2.tmp" "$2"
}

# spawn COMPONENT CMD... — runs CMD detached from this shell (own session,
# SIGHUP ignored, stdin closed), appending stdout+stderr to the component's
# log. The process writes its own PID file before exec'ing CMD, so the PID is
# right even if setsid has to fork. Prints the PID.
spawn() {
  local component=$1; shift
  local pf lf
  pf=$(pid_file "$component")
  lf=$(log_file "$component")
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  rm -f "$pf"
  # shellcheck disable=SC2016 # $$ and $@ expand in the child shell.
  setsid nohup bash -c 'echo $$ >"$0.tmp" && mv -f "$0.tmp" "$0" && exec "$@"' \
    "$pf" "$@" >>"$lf" 2>&1 </dev/null 9>&- &
  local _
  for _ in {1..50}; do
    [[ -s "$pf" ]] && break
    sleep 0.1
  done
  [[ -s "$pf" ]] || fail_with_log "$component" "process did not start (no PID file $pf)"
  cat "$pf"
}

# stop_component COMPONENT — SIGTERM, wait up to STOP_TIMEOUT s, then SIGKILL.
stop_component() {
  local component=$1 pid pf
  pf=$(pid_file "$component")
  if ! pid=$(running_pid "$component"); then
    rm -f "$pf"
    log "$component: not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while pid_alive "$pid" && ((SECONDS < deadline)); do
    sleep 0.2
  done
  if pid_alive "$pid"; then
    warn "$component (pid $pid) still alive after ${STOP_TIMEOUT}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while pid_alive "$pid"; do sleep 0.1; done
  fi
  rm -f "$pf"
  log "$component: stopped (pid $pid)"
}

# The ClickHouse server command: clickhouse-server, or the single `clickhouse` binary's
# `server` mode (start.sh, cluster.sh).
clickhouse_bin() {
  local b
  for b in "$(command -v clickhouse-server || true)" /usr/sbin/clickhouse-server /usr/bin/clickhouse-server; do
    [[ -n "$b" && -x "$b" ]] && { printf '%s\n' "$b"; return; }
  done
  if [[ -x /usr/bin/clickhouse ]]; then
    printf '%s\n' "/usr/bin/clickhouse server"
    return
  fi
  die "clickhouse: clickhouse-server not found — run deploy/local/install.sh first"
}

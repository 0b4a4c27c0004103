#!/usr/bin/env bash
# deploy/local/start.sh — starts the local stack as plain background processes
# (no Docker) and waits until each component is ready:
#   kafka       single-node KRaft broker+controller, PLAINTEXT 127.0.0.1:9092
#               (controller 127.0.0.1:9093)
#   clickhouse  HTTP 127.0.0.1:8123, native TCP 127.0.0.1:9000
# A component that is already running is left alone.
# Usage: deploy/local/start.sh [kafka|clickhouse]
# Env:   START_TIMEOUT  seconds to wait for readiness per component (default 90)
# Run deploy/local/install.sh first. Logs: .local/log/<component>.log,
# PID files: .local/run/<component>.pid.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=deploy/local/lib.sh
source "$ROOT/deploy/local/lib.sh"

KAFKA_HOME="$LOCAL_DIR/kafka"
KAFKA_LIBS="$KAFKA_HOME/libs"
KAFKA_DATA="$KAFKA_HOME/data"
KAFKA_PROPS="$KAFKA_HOME/server.properties"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"

CH_HOME="$LOCAL_DIR/clickhouse"

# Fails early, with a clear message, if another process holds one of our ports.
ensure_ports_free() {
  local component=$1; shift
  local port
  for port in "$@"; do
    if port_open 127.0.0.1 "$port"; then
      die "$component: port 127.0.0.1:$port is already in use by a process not started by this script (no live $(pid_file "$component"))"
    fi
  done
}

# Waits until CHECK_CMD... succeeds for COMPONENT running as PID; on timeout or
# early exit prints the log tail and exits.
await_ready() {
  local component=$1 pid=$2; shift 2
  local rc=0
  WAIT_PID=$pid wait_for "$START_TIMEOUT" "$@" || rc=$?
  case $rc in
    0) return 0 ;;
    2) rm -f "$(pid_file "$component")"
       fail_with_log "$component" "process $pid exited during startup" ;;
    *) fail_with_log "$component" "not ready after ${START_TIMEOUT}s (pid $pid still running; stop it with deploy/local/stop.sh $component)" ;;
  esac
}

# --- Kafka -------------------------------------------------------------------
kafka_java() {
  java -cp "$KAFKA_LIBS/*" "$@"
}

# A Kafka cluster id: 16 random bytes as unpadded base64url (22 chars), the
# same shape as `kafka.tools.StorageTool random-uuid` prints, without paying
# for a JVM start. Like Kafka, avoids a leading '-' and the reserved ids.
new_cluster_id() {
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [[ "$id" == -* || "$id" == AAAAAAAAAAAAAAAAAAAAA[AQ] ]] || break
  done
  printf '%s\n' "$id"
}

# Formats the KRaft storage once (standalone dynamic quorum); later starts
# find meta.properties and reuse the data.
kafka_format_storage() {
  [[ -f "$KAFKA_DATA/meta.properties" ]] && return 0
  local cluster_id
  cluster_id=$(new_cluster_id)
  log "kafka: formatting storage in $KAFKA_DATA (cluster id $cluster_id)"
  mkdir -p "$KAFKA_DATA"
  kafka_java -Dlog4j2.configurationFile="$DEPLOY_DIR/kafka/log4j2.xml" \
    kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$KAFKA_PROPS" \
    >>"$(log_file kafka)" 2>&1 \
    || fail_with_log kafka "storage format failed"
}

# Ready = the PLAINTEXT port accepts connections and this run logged that the
# server finished starting. KAFKA_LOG_OFFSET skips lines from earlier runs.
kafka_ready() {
  port_open "$KAFKA_HOST" "$KAFKA_PORT" \
    && grep -qF 'Kafka Server started' < <(tail -c "+$((KAFKA_LOG_OFFSET + 1))" "$(log_file kafka)")
}

start_kafka() {
  local pid
  if pid=$(running_pid kafka); then
    log "kafka: already running (pid $pid, port $KAFKA_PORT)"
    return
  fi
  compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null \
    || die "kafka: jars missing in $KAFKA_LIBS — run deploy/local/install.sh first"
  ensure_ports_free kafka "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"
  mkdir -p "$LOG_DIR"
  rotate_log kafka
  render_template "$DEPLOY_DIR/kafka/server.properties" "$KAFKA_PROPS"
  kafka_format_storage

  KAFKA_LOG_OFFSET=$(stat -c %s "$(log_file kafka)" 2>/dev/null || echo 0)
  local t0=$EPOCHREALTIME
  # shellcheck disable=SC2086 # KAFKA_HEAP_OPTS is a list of JVM flags.
  pid=$(spawn kafka java $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$DEPLOY_DIR/kafka/log4j2.xml" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_PROPS")
  await_ready kafka "$pid" kafka_ready
  log "kafka: started (pid $pid, port $KAFKA_PORT, ready in $(elapsed_since "$t0")s)"
}

# --- ClickHouse --------------------------------------------------------------
clickhouse_ready() {
  [[ "$(curl -fsS --max-time 2 "http://$CLICKHOUSE_HOST:$CLICKHOUSE_HTTP_PORT/ping" 2>/dev/null)" == "Ok." ]]
}

start_clickhouse() {
  local pid bin
  if pid=$(running_pid clickhouse); then
    log "clickhouse: already running (pid $pid, http $CLICKHOUSE_HTTP_PORT, tcp $CLICKHOUSE_TCP_PORT)"
    return
  fi
  bin=$(clickhouse_bin)
  ensure_ports_free clickhouse "$CLICKHOUSE_HTTP_PORT" "$CLICKHOUSE_TCP_PORT"
  mkdir -p "$LOG_DIR" "$CH_HOME"/{data,tmp,user_files,format_schemas}
  rotate_log clickhouse
  render_template "$DEPLOY_DIR/clickhouse/config.xml" "$CH_HOME/config.xml"
  render_template "$DEPLOY_DIR/clickhouse/users.xml" "$CH_HOME/users.xml"

  local t0=$EPOCHREALTIME
  # shellcheck disable=SC2086 # $bin may be "/usr/bin/clickhouse server".
  pid=$(spawn clickhouse $bin --config-file="$CH_HOME/config.xml")
  await_ready clickhouse "$pid" clickhouse_ready
  log "clickhouse: started (pid $pid, http $CLICKHOUSE_HTTP_PORT, tcp $CLICKHOUSE_TCP_PORT, ready in $(elapsed_since "$t0")s)"
}

main() {
  local comps c
  comps=$(select_components "$@")
  lock_stack
  for c in $comps; do
    "start_$c"
  done
}

main "$@"

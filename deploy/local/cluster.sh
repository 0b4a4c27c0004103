#!/usr/bin/env bash
# deploy/local/cluster.sh — the local multi-node stack, beside (not instead of) the
# single-node one of start.sh, on its own loopback ports, data under .local/cluster/:
#   zookeeper             127.0.0.1:12181 (ClickHouse's coordinator)
#   kafka1..kafka3        KRaft brokers+controllers, PLAINTEXT 127.0.0.1:19092-19094,
#                         controllers 19192-19194; replication factor 3, min ISR 2
#   clickhouse1..2        shard 1, two replicas: HTTP 18123/18124, native 19000/19001,
#                         interserver 19009/19010
#   clickhouse3           shard 2, one replica: HTTP 18125, native 19002, interserver 19011
#                         Clusters: `traffsure` = shard 1 alone; `traffsure_sharded` =
#                         shards 1 and 2 (clickhouse3 takes part in that one only)
# Usage: deploy/local/cluster.sh start|stop|status [component]
#        deploy/local/cluster.sh kill COMPONENT   (SIGKILL, for fault tests)
#        deploy/local/cluster.sh env [sharded]    (the TRAFFSURE__ settings that use it:
#                                                  cluster `traffsure`, or with `sharded`
#                                                  `traffsure_sharded` and its two shards)
# A component that is already running is left alone by start. Needs
# deploy/local/install.sh (Kafka and ZooKeeper jars, ClickHouse). Logs:
# .local/log/cluster-<component>.log, PID files .local/run/cluster-<component>.pid.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=deploy/local/lib.sh
source "$ROOT/deploy/local/lib.sh"

CLUSTER_DIR="$LOCAL_DIR/cluster"
# A broker restarted after a SIGKILL recovers its logs and rejoins the KRaft quorum: on a
# loaded machine (the fault tests run beside the whole single-node suite) that took 97 s,
# measured at a load average of 40, so the cluster parts get longer than lib.sh's default.
START_TIMEOUT="${CLUSTER_START_TIMEOUT:-300}"
CLUSTER_TEMPLATES="$DEPLOY_DIR/cluster"
KAFKA_LIBS="$LOCAL_DIR/kafka/libs"
ZOOKEEPER_LIBS="$LOCAL_DIR/zookeeper/libs"
CLUSTER_HEAP_OPTS="${CLUSTER_HEAP_OPTS:--Xms128m -Xmx512m}"
CLUSTER_COMPONENTS=(zookeeper kafka1 kafka2 kafka3 clickhouse1 clickhouse2 clickhouse3)

ZOOKEEPER_PORT=12181
kafka_port() { echo $((19091 + $1)); }
kafka_controller_port() { echo $((19191 + $1)); }
clickhouse_http_port() { echo $((18122 + $1)); }
clickhouse_tcp_port() { echo $((18999 + $1)); }
clickhouse_interserver_port() { echo $((19008 + $1)); }
# Servers 1 and 2 are the replicas of shard 1, server 3 is shard 2.
clickhouse_shard() { if (($1 <= 2)); then echo 1; else echo 2; fi; }

KAFKA_BROKERS="127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"

# A lock of its own, not start.sh's: the cluster's parts share nothing with the
# single-node stack, whose tests may start and stop it meanwhile.
lock_cluster() {
  mkdir -p "$RUN_DIR"
  exec 9>"$RUN_DIR/cluster.lock"
  flock -w "$START_TIMEOUT" 9 || die "another cluster.sh still holds $RUN_DIR/cluster.lock after ${START_TIMEOUT}s"
}

# render SRC DST NAME=VALUE... — render_template, then @NAME@ replaced by VALUE.
render() {
  local src=$1 dst=$2; shift 2
  render_template "$src" "$dst"
  local pair
  for pair in "$@"; do
    sed -i "s|@${pair%%=*}@|${pair#*=}|g" "$dst"
  done
}

# Fails early if a port is held by a process this script did not start.
ports_free() {
  local component=$1; shift
  local port
  for port in "$@"; do
    port_open 127.0.0.1 "$port" \
      && die "cluster-$component: port 127.0.0.1:$port is already in use by a process not started by this script"
  done
  return 0
}

await() {
  local component=$1 pid=$2; shift 2
  local rc=0
  WAIT_PID=$pid wait_for "$START_TIMEOUT" "$@" || rc=$?
  case $rc in
    0) return 0 ;;
    2) rm -f "$(pid_file "cluster-$component")"
       fail_with_log "cluster-$component" "process $pid exited during startup" ;;
    *) fail_with_log "cluster-$component" "not ready after ${START_TIMEOUT}s" ;;
  esac
}

# --- ZooKeeper ---------------------------------------------------------------
# Ready = serving requests: `srvr` names the server's mode only then.
zookeeper_ready() {
  [[ "$( (exec 3<>/dev/tcp/127.0.0.1/$ZOOKEEPER_PORT && printf 'srvr' >&3 && timeout 2 cat <&3) 2>/dev/null)" == *"Mode: "* ]]
}

start_zookeeper() {
  local dir="$CLUSTER_DIR/zookeeper" pid
  compgen -G "$ZOOKEEPER_LIBS/zookeeper-*.jar" >/dev/null \
    || die "zookeeper: jars missing in $ZOOKEEPER_LIBS — run deploy/local/install.sh first"
  ports_free zookeeper "$ZOOKEEPER_PORT"
  mkdir -p "$dir/data"
  render "$CLUSTER_TEMPLATES/zoo.cfg" "$dir/zoo.cfg"
  # shellcheck disable=SC2086 # CLUSTER_HEAP_OPTS is a list of JVM flags.
  pid=$(spawn cluster-zookeeper java $CLUSTER_HEAP_OPTS -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$CLUSTER_TEMPLATES/log4j2.xml" \
    -Dzookeeper.jmx.log4j.disable=true \
    -cp "$ZOOKEEPER_LIBS/*" org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg")
  await zookeeper "$pid" zookeeper_ready
}

# --- Kafka -------------------------------------------------------------------
# One cluster id for the three brokers, made once.
kafka_cluster_id() {
  local file="$CLUSTER_DIR/kafka.cluster-id"
  if [[ ! -s "$file" ]]; then
    mkdir -p "$CLUSTER_DIR"
    head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' | sed 's/^-/A/' >"$file"
  fi
  cat "$file"
}

start_kafka() {
  local node=$1 dir="$CLUSTER_DIR/kafka$1" pid port
  port=$(kafka_port "$node")
  compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null \
    || die "kafka: jars missing in $KAFKA_LIBS — run deploy/local/install.sh first"
  ports_free "kafka$node" "$port" "$(kafka_controller_port "$node")"
  mkdir -p "$dir"
  render "$CLUSTER_TEMPLATES/kafka.properties" "$dir/server.properties" \
    NODE="$node" PORT="$port" CONTROLLER_PORT="$(kafka_controller_port "$node")"
  if [[ ! -f "$dir/data/meta.properties" ]]; then
    mkdir -p "$dir/data"
    java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$DEPLOY_DIR/kafka/log4j2.xml" \
      kafka.tools.StorageTool format -t "$(kafka_cluster_id)" -c "$dir/server.properties" \
      >>"$(log_file "cluster-kafka$node")" 2>&1 \
      || fail_with_log "cluster-kafka$node" "storage format failed"
  fi
  # shellcheck disable=SC2086 # CLUSTER_HEAP_OPTS is a list of JVM flags.
  spawn "cluster-kafka$node" java $CLUSTER_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$DEPLOY_DIR/kafka/log4j2.xml" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$dir/server.properties" >/dev/null
}

# Ready = this run of every started broker logged that it finished starting. The
# controllers elect a leader only once two of three run, so the brokers start together
# and are waited for together. KAFKA_LOG_OFFSETS holds "node:offset" of each log.
kafka_ready() {
  local entry node pid
  for entry in $KAFKA_LOG_OFFSETS; do
    node=${entry%%:*}
    pid=$(running_pid "cluster-kafka$node") || return 2
    grep -qF 'Kafka Server started' < <(tail -c "+$((${entry#*:} + 1))" "$(log_file "cluster-kafka$node")") || return 1
  done
}

await_kafka() {
  [[ -n "$KAFKA_LOG_OFFSETS" ]] || return 0
  local deadline=$((SECONDS + START_TIMEOUT)) rc entry
  while :; do
    rc=0
    kafka_ready || rc=$?
    case $rc in
      0) break ;;
      2) for entry in $KAFKA_LOG_OFFSETS; do
           running_pid "cluster-kafka${entry%%:*}" >/dev/null \
             || fail_with_log "cluster-kafka${entry%%:*}" "process exited during startup"
         done ;;
    esac
    ((SECONDS < deadline)) || fail_with_log "cluster-kafka${KAFKA_LOG_OFFSETS%%:*}" "brokers not all started after ${START_TIMEOUT}s"
    sleep 0.5
  done
  log "kafka cluster: ready ($KAFKA_BROKERS)"
}

# --- ClickHouse --------------------------------------------------------------
clickhouse_up() {
  [[ "$(curl -fsS --max-time 2 "http://127.0.0.1:$(clickhouse_http_port "$CLICKHOUSE_NODE")/ping" 2>/dev/null)" == "Ok." ]]
}

start_clickhouse() {
  local node=$1 dir="$CLUSTER_DIR/clickhouse$1" pid bin
  bin=$(clickhouse_bin)
  ports_free "clickhouse$node" "$(clickhouse_http_port "$node")" "$(clickhouse_tcp_port "$node")" \
    "$(clickhouse_interserver_port "$node")"
  mkdir -p "$dir"/{data,tmp,user_files,format_schemas}
  render "$CLUSTER_TEMPLATES/clickhouse.xml" "$dir/config.xml" NODE="$node" \
    HTTP_PORT="$(clickhouse_http_port "$node")" TCP_PORT="$(clickhouse_tcp_port "$node")" \
    INTERSERVER_PORT="$(clickhouse_interserver_port "$node")" SHARD="$(clickhouse_shard "$node")"
  render_template "$DEPLOY_DIR/clickhouse/users.xml" "$dir/users.xml"
  # shellcheck disable=SC2086 # $bin may be "/usr/bin/clickhouse server".
  pid=$(spawn "cluster-clickhouse$node" $bin --config-file="$dir/config.xml")
  CLICKHOUSE_NODE=$node await "clickhouse$node" "$pid" clickhouse_up
}

start_component() {
  local c=$1 pid
  if pid=$(running_pid "cluster-$c"); then
    log "cluster-$c: already running (pid $pid)"
    return
  fi
  rotate_log "cluster-$c"
  local t0=$EPOCHREALTIME
  case $c in
    zookeeper) start_zookeeper ;;
    kafka[123])
      KAFKA_LOG_OFFSETS+=" ${c#kafka}:$(stat -c %s "$(log_file "cluster-$c")" 2>/dev/null || echo 0)"
      start_kafka "${c#kafka}"
      log "cluster-$c: spawned (pid $(running_pid "cluster-$c"))"
      return ;;
    clickhouse[123]) start_clickhouse "${c#clickhouse}" ;;
  esac
  log "cluster-$c: started (pid $(running_pid "cluster-$c"), ready in $(elapsed_since "$t0")s)"
}

select_cluster_components() {
  if [[ -z "${1:-}" ]]; then
    printf '%s\n' "${CLUSTER_COMPONENTS[@]}"
    return
  fi
  local c
  for c in "${CLUSTER_COMPONENTS[@]}"; do
    [[ "$1" == "$c" ]] && { printf '%s\n' "$c"; return; }
  done
  die "unknown cluster component '$1' (expected one of: ${CLUSTER_COMPONENTS[*]})"
}

print_env() {
  [[ -z "${1:-}" || "$1" == sharded ]] || die "usage: cluster.sh env [sharded]"
  cat <<ENV
TRAFFSURE__KAFKA__BROKERS=$KAFKA_BROKERS
TRAFFSURE__KAFKA__REPLICATION_FACTOR=3
TRAFFSURE__CLICKHOUSE__URL=http://127.0.0.1:$(clickhouse_http_port 1)
ENV
  case ${1:-} in
    "") echo "TRAFFSURE__CLICKHOUSE__CLUSTER=traffsure" ;;
    sharded)
      echo "TRAFFSURE__CLICKHOUSE__CLUSTER=traffsure_sharded"
      echo "TRAFFSURE__CLICKHOUSE__SHARDS=http://127.0.0.1:$(clickhouse_http_port 1),http://127.0.0.1:$(clickhouse_http_port 3)" ;;
  esac
}

main() {
  local action=${1:-} c pid
  case $action in
    start)
      lock_cluster
      KAFKA_LOG_OFFSETS=""
      for c in $(select_cluster_components "${2:-}"); do start_component "$c"; done
      await_kafka ;;
    stop)
      lock_cluster
      local comps
      comps=$(select_cluster_components "${2:-}" | tac)
      for c in $comps; do stop_component "cluster-$c"; done ;;
    kill)
      [[ -n "${2:-}" ]] || die "usage: cluster.sh kill COMPONENT"
      select_cluster_components "$2" >/dev/null
      if pid=$(running_pid "cluster-$2"); then
        kill -KILL "$pid"
        while pid_alive "$pid"; do sleep 0.05; done
        rm -f "$(pid_file "cluster-$2")"
        log "cluster-$2: killed (pid $pid)"
      else
        log "cluster-$2: not running"
      fi ;;
    status)
      for c in $(select_cluster_components "${2:-}"); do
        if pid=$(running_pid "cluster-$c"); then log "cluster-$c: running (pid $pid)"; else log "cluster-$c: stopped"; fi
      done ;;
    env) print_env "${2:-}" ;;
    *) die "usage: cluster.sh start|stop|status [component] | kill COMPONENT | env [sharded]" ;;
  esac
}

main "$@"

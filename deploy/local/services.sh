#!/usr/bin/env bash
# deploy/local/services.sh — starts or stops the TraffSure services on loopback,
# from the binaries of one cargo profile, against the local stack (start.sh).
# Usage: deploy/local/services.sh start [release|debug]
#        deploy/local/services.sh stop
# CLUSTER=1: the services use the cluster stack of cluster.sh (three Kafka brokers,
# two ClickHouse replicas) with the settings `cluster.sh env` prints.
# On start: waits for every service's /readyz, creates a demo flow if there is
# none, and prints the admin panel address and a working tracking link.
# Logs: .local/log/<service>.log, PID files: .local/run/<service>.pid.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=deploy/local/lib.sh
source "$ROOT/deploy/local/lib.sh"

# name:http-port, in start order (consumers before the edges).
SERVICES=(sink:9102 conversion-attribution:9101 postback-dispatcher:9103 reporting-api:8082 click-ingest:8080 postback-ingest:8081)
KEY_FILE="$LOCAL_DIR/click-hash.keys"
ADMIN_FILE="$LOCAL_DIR/admin-password"
API_KEY_FILE="$LOCAL_DIR/api-key"

# A click hash secret made once per machine and kept under .local/.
click_hash_keys() {
  if [[ ! -s "$KEY_FILE" ]]; then
    mkdir -p "$LOCAL_DIR"
    printf '1:%s\n' "$(head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 40)" >"$KEY_FILE"
    chmod 600 "$KEY_FILE"
  fi
  cat "$KEY_FILE"
}

# A secret made once per machine and kept under .local/ (mode 600). Usage: local_secret FILE
local_secret() {
  if [[ ! -s "$1" ]]; then
    mkdir -p "$LOCAL_DIR"
    head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 >"$1"
    chmod 600 "$1"
  fi
  cat "$1"
}

# Exports the cluster stack's settings when CLUSTER is set (in the caller's subshell).
cluster_env() {
  [[ -n "${CLUSTER:-}" ]] || return 0
  local line
  while IFS= read -r line; do
    export "${line?}"
  done < <("$DEPLOY_DIR/cluster.sh" env)
}

start_services() {
  local profile=${1:-release} bin_dir entry name port pid
  bin_dir="$ROOT/target/$profile"
  local keys admin_password api_key
  keys=$(click_hash_keys)
  admin_password=$(local_secret "$ADMIN_FILE")
  api_key=$(local_secret "$API_KEY_FILE")
  for entry in "${SERVICES[@]}"; do
    name=${entry%%:*} port=${entry##*:}
    [[ -x "$bin_dir/$name" ]] || die "$bin_dir/$name is missing: build the $profile binaries first (make run does)"
    if pid=$(running_pid "$name"); then
      log "$name: already running (pid $pid)"
      continue
    fi
    rotate_log "$name"
    pid=$(cd "$ROOT" && cluster_env && TRAFFSURE__HTTP__BIND="127.0.0.1:$port" \
      TRAFFSURE__CLICK_HASH__KEYS="$keys" TRAFFSURE__CLICK_HASH__ACTIVE_KEY=1 \
      TRAFFSURE__GEOIP__DATABASE="$LOCAL_DIR/geoip/country.mmdb" \
      TRAFFSURE__ADMIN__USERNAME=admin TRAFFSURE__ADMIN__PASSWORD="$admin_password" \
      TRAFFSURE__API_KEYS="$api_key" TRAFFSURE__DISPATCHER_URL=http://127.0.0.1:9103 \
      spawn "$name" "$bin_dir/$name")
    WAIT_PID=$pid wait_for "$START_TIMEOUT" curl -fs "http://127.0.0.1:$port/readyz" -o /dev/null \
      || fail_with_log "$name" "not ready on 127.0.0.1:$port after ${START_TIMEOUT}s"
    log "$name: started (pid $pid, http://127.0.0.1:$port)"
  done
  demo_flow "$admin_password" "$api_key"
}

demo_flow() {
  local api=http://127.0.0.1:8082 flows admin_password=$1 api_key=$2
  flows=$(curl -fsS -H "Authorization: Bearer $api_key" "$api/api/v1/flows")
  if [[ "$flows" != *'"slug":"demo"'* ]]; then
    curl -fsS -X POST "$api/api/v1/flows" -H "Authorization: Bearer $api_key" \
      -H 'content-type: application/json' -d '{
      "name": "Demo flow", "slug": "demo",
      "destination_url": "https://example.com/offer?click={click}&sub_id={sub_id}&country={country}",
      "goals": [{"key": "sale", "payout": "10"}]
    }' >/dev/null
    log "demo flow created"
  fi
  cat <<MSG

TraffSure is running.
  Admin panel:    http://127.0.0.1:8082/   (user admin, password $admin_password)
  Tracking link:  http://127.0.0.1:8080/c/demo?sub_id=readme&source=local
  Try it:         curl -si -A 'Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0' 'http://127.0.0.1:8080/c/demo?sub_id=readme&source=local'
                  (curl's own user agent is flagged as a bot: kept, but not in the click counts)
  Postback:       curl -s 'http://127.0.0.1:8081/postback?click=<click hash from Location>&goal=sale'
  Dashboard API:  curl -s -H 'Authorization: Bearer $api_key' http://127.0.0.1:8082/api/v1/dashboard
  Secrets:        .local/admin-password, .local/api-key, .local/click-hash.keys
  Stop:           make stop
MSG
}

stop_services() {
  local i entry
  # Edges first, so nothing new arrives while the consumers drain.
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
    entry=${SERVICES[i]}
    stop_component "${entry%%:*}"
  done
}

case "${1:-}" in
  start) shift; start_services "$@" ;;
  stop) stop_services ;;
  *) die "usage: $0 start [release|debug] | stop" ;;
esac

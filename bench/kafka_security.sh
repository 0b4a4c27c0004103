#!/usr/bin/env bash
# bench/kafka_security.sh — click-ingest and postback-ingest producing to Kafka over
# PLAINTEXT and over SASL_SSL (TLS with a client certificate, SCRAM-SHA-512), both on one
# private broker started for the run with the two listeners (tests/examples/secured_broker.rs,
# the test harness's secured broker), rounds alternating so drift on the shared machine
# hits both alike. Prints requests/s, p50/p99 latency and server CPU per request for each
# service and protocol, and the SASL_SSL / PLAINTEXT ratios.
# Env: BENCH_KAFKA_SECURITY ("plaintext sasl_ssl", the default, compares both; one word runs
#      that one alone), BENCH_SECONDS (10), BENCH_CONNECTIONS (32), BENCH_ROUNDS (2),
#      BENCH_PROFILE (release; debug measures the debug build instead)
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

read -r -a MODES <<<"${BENCH_KAFKA_SECURITY:-plaintext sasl_ssl}"
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
ROUNDS=${BENCH_ROUNDS:-2}
PROFILE=${BENCH_PROFILE:-release}
KEYS="1:bench-security-secret-0001"
HASHES=20000
CI_PORT=18280
PB_PORT=18281
for mode in "${MODES[@]}"; do
  [[ $mode == plaintext || $mode == sasl_ssl ]] \
    || die "BENCH_KAFKA_SECURITY: plaintext and/or sasl_ssl, not '$mode'"
done

bench_install
PROFILE_FLAG=()
[[ $PROFILE == release ]] && PROFILE_FLAG=(--release)
# The whole workspace, as make build and make build-release do: the same features, so
# nothing is built twice.
(cd "$ROOT" && cargo build -q "${PROFILE_FLAG[@]}" --locked --workspace --bins --examples) >&2
BIN_DIR="$ROOT/target/$PROFILE"
DIR="$BENCH_DIR/kafka-security"
rm -rf "$DIR"
mkdir -p "$DIR"

BROKER_PID=
SERVICE_PID=
# shellcheck disable=SC2015 # `|| true` covers an unset PID, a failed kill and a failed wait alike.
cleanup() {
  [[ -n $SERVICE_PID ]] && kill "$SERVICE_PID" 2>/dev/null && wait "$SERVICE_PID" 2>/dev/null || true
  [[ -n $BROKER_PID ]] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null || true
  return 0
}
trap cleanup EXIT

log "starting a private broker with PLAINTEXT and SASL_SSL listeners"
"$BIN_DIR/examples/secured_broker" "$DIR" >"$DIR/broker.log" 2>&1 &
BROKER_PID=$!
start=$SECONDS
until [[ -s $DIR/sasl_ssl.env ]]; do
  kill -0 "$BROKER_PID" 2>/dev/null || die "the private broker exited (see $DIR/broker.log)"
  ((SECONDS - start < 240)) || die "the private broker is not ready after 240 s"
  sleep 0.5
done
mapfile -t PLAIN_ENV <"$DIR/plaintext.env"
PLAIN_BROKERS=${PLAIN_ENV[0]#*=}
PREFIX="bench-security-$(date +%s)."
"$BIN_DIR/examples/seed_flows" "$PLAIN_BROKERS" "$PREFIX" 10 >&2
"$BIN_DIR/examples/click_hashes" "$HASHES" "$KEYS" 1 >"$DIR/hashes.txt"
postbacks_lua "$DIR/hashes.txt" "goal=sale&status=approved&revenue=1.50&currency=USD" >"$DIR/postbacks.lua"
wrk_report_lua >"$DIR/report.lua"

# Usage: start_service NAME MODE PORT — runs a service with the listener's settings until
# it reports ready; sets SERVICE_PID.
start_service() {
  local name=$1 mode=$2 port=$3 env_lines
  mapfile -t env_lines <"$DIR/$mode.env"
  env "${env_lines[@]}" \
    TRAFFSURE__HTTP__BIND="127.0.0.1:$port" \
    TRAFFSURE__HTTP__WORKERS=2 \
    TRAFFSURE__KAFKA__TOPIC_PREFIX="$PREFIX" \
    TRAFFSURE__CLICK_HASH__KEYS="$KEYS" \
    TRAFFSURE__SPILL__PATH="$DIR/$name-$mode.spill" \
    TRAFFSURE__TELEMETRY__LOG_LEVEL=warn \
    "$BIN_DIR/$name" >>"$DIR/$name-$mode.log" 2>&1 &
  SERVICE_PID=$!
  wait_ready "$port" 120 || die "$name over $mode not ready (see $DIR/$name-$mode.log)"
}

stop_service() {
  kill "$SERVICE_PID" 2>/dev/null || true
  wait "$SERVICE_PID" 2>/dev/null || true
  SERVICE_PID=
}

# Usage: measure NAME MODE — one warmed-up wrk run against the service; prints
# "rps p50 p99 errors non2xx3xx cpu_ms_per_request".
measure() {
  local name=$1 mode=$2 port url script line
  case $name in
    click-ingest) port=$CI_PORT url="http://127.0.0.1:$CI_PORT/c/bench-5?sub_id=bench" script="$DIR/report.lua" ;;
    postback-ingest) port=$PB_PORT url="http://127.0.0.1:$PB_PORT" script="$DIR/postbacks.lua" ;;
  esac
  start_service "$name" "$mode" "$port"
  wrk -t 2 -c "$CONNECTIONS" -d 3s -s "$script" "$url" >/dev/null
  line=$(wrk_cpu_ms "$SERVICE_PID" "$url" "$script")
  stop_service
  # wrk_cpu_ms: requests seconds rps p50 p99 p999 errors non2xx3xx cpu_ms
  awk '{ print $3, $4, $5, $7, $8, $9 }' <<<"$line"
}

echo "wrk -t 2 -c $CONNECTIONS -d ${SECONDS_PER_RUN}s per run, $ROUNDS rounds alternating protocols, $PROFILE build, 2 workers; one private broker (PLAINTEXT and SASL_SSL listeners) on the same shared 2-core machine; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| round | service | Kafka protocol | requests/s | p50 ms | p99 ms | errors | non-2xx/3xx | CPU ms/request |"
echo "|---|---|---|---|---|---|---|---|---|"
declare -A total
for round in $(seq 1 "$ROUNDS"); do
  for name in click-ingest postback-ingest; do
    for mode in "${MODES[@]}"; do
      read -r rps p50 p99 errors bad cpu < <(measure "$name" "$mode")
      echo "| $round | $name | $mode | $rps | $p50 | $p99 | $errors | $bad | $cpu |"
      total[$name-$mode]=$(awk -v a="${total[$name-$mode]:-0}" -v b="$rps" 'BEGIN { print a + b }')
    done
  done
done
if ((${#MODES[@]} == 2)); then
  echo
  for name in click-ingest postback-ingest; do
    echo "$name: SASL_SSL / PLAINTEXT requests/s over all rounds: $(ratio "${total[$name-sasl_ssl]}" "${total[$name-plaintext]}")"
  done
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

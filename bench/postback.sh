#!/usr/bin/env bash
# bench/postback.sh — postback-ingest under wrk: valid postbacks (real click hashes signed
# with a bench key through traffsure_core), each answered 200 only after Kafka (acks=all,
# idempotent producer) acknowledged it, beside the nginx baseline of bench/lib.sh run the
# same way. Prints postbacks/s, p50/p99/p99.9 latency, CPU per postback and the ratios.
# Env: SECONDS_PER_RUN (default 15), CONNECTIONS (default 64), ROUNDS (default 2).
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

SECONDS_PER_RUN=${SECONDS_PER_RUN:-15}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-2}
HASHES=20000
KEYS="1:bench-postback-secret-0001"
PB_PORT=18181
NGINX_PORT=18182

bench_install
BIN="$ROOT/target/release/postback-ingest"
GEN="$ROOT/target/release/examples/click_hashes"
build_release_if_missing "$BIN" "$GEN"
for port in $PB_PORT $NGINX_PORT; do
  port_open 127.0.0.1 "$port" && die "port $port is in use"
done

dir="$BENCH_DIR/postback"
mkdir -p "$dir"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

TRAFFSURE__HTTP__BIND="127.0.0.1:$PB_PORT" \
  TRAFFSURE__KAFKA__TOPIC_PREFIX="bench-postback-$(date +%s)." \
  TRAFFSURE__CLICK_HASH__KEYS="$KEYS" \
  TRAFFSURE__TELEMETRY__LOG_LEVEL=warn \
  "$BIN" >"$dir/postback-ingest.log" 2>&1 &
pb_pid=$!
pids+=("$pb_pid")
wait_ready "$PB_PORT" || die "postback-ingest not ready (see $dir/postback-ingest.log)"
nginx_pid=$(nginx_baseline_start "$NGINX_PORT" 2)
pids+=("$nginx_pid")

# wrk script: rotates through valid postbacks; prints the same RESULT line as run_wrk.
"$GEN" "$HASHES" "$KEYS" 1 >"$dir/hashes.txt"
postbacks_lua "$dir/hashes.txt" "goal=sale&status=approved&revenue=1.50&currency=USD" >"$dir/postbacks.lua"

# Checks one postback end to end before loading: 200 "accepted" means acknowledged.
first=$(head -1 "$dir/hashes.txt")
answer=$(curl -s "http://127.0.0.1:$PB_PORT/postback?click=$first&goal=sale")
[[ $answer == *'"accepted"'* ]] || die "postback not accepted: $answer"

# run_wrk writes the baseline's report.lua; a short warm-up of both servers.
run_wrk "http://127.0.0.1:$NGINX_PORT/" 2 "$CONNECTIONS" 2 >/dev/null
wrk -t 2 -c "$CONNECTIONS" -d 3s -s "$dir/postbacks.lua" "http://127.0.0.1:$PB_PORT" >/dev/null

echo "wrk -t 2 -c $CONNECTIONS -d ${SECONDS_PER_RUN}s, $ROUNDS rounds alternating; both servers on 127.0.0.1, 2 workers each, on a shared 2-core machine"
echo
echo "| round | server | requests/s | p50 ms | p99 ms | p99.9 ms | errors | non-2xx/3xx | CPU ms/request |"
echo "|---|---|---|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  read -r _ _ n_rps n_p50 n_p99 n_p999 n_err n_bad n_cpu \
    < <(wrk_cpu_ms "$nginx_pid" "http://127.0.0.1:$NGINX_PORT/" "$BENCH_DIR/report.lua")
  read -r p_req _ p_rps p_p50 p_p99 p_p999 p_err p_bad p_cpu \
    < <(wrk_cpu_ms "$pb_pid" "http://127.0.0.1:$PB_PORT" "$dir/postbacks.lua")
  echo "| $round | nginx baseline (constant 302) | $n_rps | $n_p50 | $n_p99 | $n_p999 | $n_err | $n_bad | $n_cpu |"
  echo "| $round | postback-ingest (valid postbacks, Kafka ack) | $p_rps | $p_p50 | $p_p99 | $p_p999 | $p_err | $p_bad | $p_cpu |"
  echo "| $round | ratio postback-ingest / nginx | $(ratio "$p_rps" "$n_rps") | $(ratio "$p_p50" "$n_p50") | $(ratio "$p_p99" "$n_p99") | $(ratio "$p_p999" "$n_p999") | | | $(ratio "$p_cpu" "$n_cpu") |"
  total_accepted=$((${total_accepted:-0} + p_req - p_bad))
done
echo
echo "postback-ingest peak RSS: $(peak_rss_mib "$pb_pid") MiB; accepted postbacks in total: $total_accepted (plus warm-up)"

#!/usr/bin/env bash
# bench/dispatcher.sh — postback-dispatcher throughput to a local receiver (nginx answering
# 200), and the same with a second endpoint that hangs. Conversions are produced to Kafka
# first; the dispatcher then drains them, and the rate is taken from the outbound log
# (first to last delivered attempt). The receiver's own capacity (wrk on the same nginx)
# is measured side by side as the baseline. Usage: bench/dispatcher.sh [CONVERSIONS]
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

N=${1:-${DISPATCHER_BENCH_CONVERSIONS:-50000}}
BROKERS=${TRAFFSURE_TEST_KAFKA:-127.0.0.1:9092}
RECEIVER_PORT=18190
HANG_PORT=18191
OPS_PORT=18192
RUN_ID=$(date +%s)-$$
DIR="$BENCH_DIR/dispatcher"
mkdir -p "$DIR"

bench_install
(cd "$ROOT" && cargo build --release --locked -q -p postback-dispatcher --bin postback-dispatcher --example dispatcher-load)
BIN="$ROOT/target/release/postback-dispatcher"
LOAD="$ROOT/target/release/examples/dispatcher-load"

PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# A receiver that answers every request 200 with a short body, like a traffic source.
cat >"$DIR/nginx.conf" <<CONF
worker_processes 1;
pid $DIR/nginx.pid;
error_log $DIR/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $DIR;
  proxy_temp_path $DIR;
  fastcgi_temp_path $DIR;
  uwsgi_temp_path $DIR;
  scgi_temp_path $DIR;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$RECEIVER_PORT;
    location / { return 200 "ok"; }
  }
}
CONF
/usr/sbin/nginx -c "$DIR/nginx.conf" >"$DIR/nginx.out" 2>&1 &
PIDS+=($!)
wait_port "$RECEIVER_PORT" 10 || die "receiver nginx did not listen on $RECEIVER_PORT"
"$LOAD" hang "$HANG_PORT" &
PIDS+=($!)
wait_port "$HANG_PORT" 10 || die "hanging endpoint did not listen on $HANG_PORT"

# Runs one scenario: produce N conversions for a flow whose outbound postbacks go to the
# given URLs, start the dispatcher, wait for N deliveries of o1. Prints
# "delivered seconds rate cpu_seconds peak_rss_mib".
scenario() {
  local name=$1 prefix="bench-dispatcher-$RUN_ID-$1." pid ticks0 ticks1 result rss
  shift
  "$LOAD" produce "$BROKERS" "$prefix" "$N" "$@" 2>>"$DIR/load.log"
  TRAFFSURE__HTTP__BIND="127.0.0.1:$OPS_PORT" TRAFFSURE__KAFKA__BROKERS="$BROKERS" \
    TRAFFSURE__KAFKA__TOPIC_PREFIX="$prefix" TRAFFSURE__GROUP_ID="bench-$RUN_ID-$name" \
    TRAFFSURE__OUTBOUND__ALLOW_PRIVATE_TARGETS=true RUST_LOG=warn \
    "$BIN" >"$DIR/dispatcher-$name.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  ticks0=$(cpu_ticks "$pid")
  result=$("$LOAD" measure "$BROKERS" "$prefix" "$N" o1 180 2>>"$DIR/load.log")
  ticks1=$(cpu_ticks "$pid")
  rss=$(peak_rss_mib "$pid")
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  echo "$result $(awk -v t=$((ticks1 - ticks0)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz }') $rss"
}

receiver="http://127.0.0.1:$RECEIVER_PORT/pb?click={click}&status={status}&payout={payout}&cv={conversion}"
hang_url="http://127.0.0.1:$HANG_PORT/pb?cv={conversion}"
# The machine may be shared: the two runs alternate, twice, and the faster of each is kept.
read -r a_n a_s a_rate a_cpu a_rss < <(scenario alone1 "$receiver")
read -r b_n b_s b_rate b_cpu b_rss < <(scenario hang1 "$receiver" "$hang_url")
read -r a2_n a2_s a2_rate a2_cpu a2_rss < <(scenario alone2 "$receiver")
read -r b2_n b2_s b2_rate b2_cpu b2_rss < <(scenario hang2 "$receiver" "$hang_url")
runs="alone $a_rate, with the hanging endpoint $b_rate, alone $a2_rate, with the hanging endpoint $b2_rate"
if ((a2_rate > a_rate)); then a_n=$a2_n a_s=$a2_s a_rate=$a2_rate a_cpu=$a2_cpu a_rss=$a2_rss; fi
if ((b2_rate > b_rate)); then b_n=$b2_n b_s=$b2_s b_rate=$b2_rate b_cpu=$b2_cpu b_rss=$b2_rss; fi
read -r w_req w_s w_rps w_p50 w_p99 _ _ _ < <(run_wrk "http://127.0.0.1:$RECEIVER_PORT/pb?cv=x" 5 64 1)

echo
echo "Conversions per run: $N, one outbound postback each to nginx on 127.0.0.1 (answers 200);"
echo "in the second run each conversion also fires one to an endpoint that never answers."
echo
echo "Best of two alternating runs of each (postbacks/s in order: $runs)."
echo
echo "| run | delivered | seconds | postbacks/s | dispatcher CPU s | peak RSS MiB |"
echo "|---|---|---|---|---|---|"
echo "| receiver alone | $a_n | $a_s | $a_rate | $a_cpu | $a_rss |"
echo "| with a hanging endpoint | $b_n | $b_s | $b_rate | $b_cpu | $b_rss |"
echo "| baseline: wrk → same nginx, 64 connections | $w_req | $w_s | $w_rps (p50 $w_p50 ms, p99 $w_p99 ms) | | |"
echo
echo "- with a hanging endpoint / alone: $(ratio "$b_rate" "$a_rate")"
echo "- dispatcher / wrk on the same receiver: $(ratio "$a_rate" "$w_rps")"
echo "- target ≥ 5000 postbacks/s: $(awk -v r="$a_rate" 'BEGIN { print (r >= 5000 ? "met" : "NOT met") }') alone, $(awk -v r="$b_rate" 'BEGIN { print (r >= 5000 ? "met" : "NOT met") }') with the hanging endpoint"

#!/usr/bin/env bash
# bench/click.sh — click-ingest (release build, producing to the real Kafka, 10,000 flows
# loaded, GeoIP on) against nginx answering a constant 302, in the same run, with wrk on
# loopback. Prints redirects/s, latency percentiles, server CPU per redirect (all threads:
# click-ingest with librdkafka; nginx master and workers), the ratios, peak RSS of
# click-ingest, and latency at about 80% of click-ingest's own peak.
# Env: BENCH_SECONDS (default 10), BENCH_CONNECTIONS (64), BENCH_FLOWS (10000), BENCH_ROUNDS (2)
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
# shellcheck source=lib.sh
source "$ROOT/bench/lib.sh"

SECONDS_PER_RUN=${BENCH_SECONDS:-10}
CONNS=${BENCH_CONNECTIONS:-64}
FLOWS=${BENCH_FLOWS:-10000}
ROUNDS=${BENCH_ROUNDS:-2}
CLK_TCK=$(getconf CLK_TCK)
UA="Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"

bench_install
BIN="$ROOT/target/release/click-ingest"
[[ -x $BIN ]] || die "$BIN is missing: run make build-release (make bench does)"

PREFIX="bench-$(date +%s)-$$."
CI_PORT=18080
NGINX_PORT=18090
DIR="$BENCH_DIR/click"
mkdir -p "$DIR"
rm -f "$DIR"/clicks.spill*

log "seeding $FLOWS flows into ${PREFIX}flows"
(cd "$ROOT" && cargo run -q --release --locked -p click-ingest --example seed_flows -- \
  127.0.0.1:9092 "$PREFIX" "$FLOWS") >&2

CI_PID=
NGINX_PID=
cleanup() {
  [[ -n $CI_PID ]] && kill "$CI_PID" 2>/dev/null && wait "$CI_PID" 2>/dev/null
  [[ -n $NGINX_PID ]] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
  return 0
}
trap cleanup EXIT

GEOIP="$LOCAL_DIR/geoip/country.mmdb"
[[ -f $GEOIP ]] || GEOIP=""
KEYS=$(cat "$LOCAL_DIR/click-hash.keys" 2>/dev/null || echo "1:bench-click-hash-secret-0001")
TRAFFSURE__HTTP__BIND=127.0.0.1:$CI_PORT \
TRAFFSURE__KAFKA__TOPIC_PREFIX=$PREFIX \
TRAFFSURE__CLICK_HASH__KEYS=$KEYS \
TRAFFSURE__GEOIP__DATABASE=$GEOIP \
TRAFFSURE__SPILL__PATH=$DIR/clicks.spill \
TRAFFSURE__TELEMETRY__LOG_LEVEL=warn \
  "$BIN" >"$DIR/click-ingest.log" 2>&1 &
CI_PID=$!
start=$SECONDS
until [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$CI_PORT/readyz")" == 200 ]]; do
  kill -0 "$CI_PID" 2>/dev/null || die "click-ingest exited (see $DIR/click-ingest.log)"
  ((SECONDS - start < 120)) || die "click-ingest not ready after 120 s"
  sleep 0.2
done
log "click-ingest ready with $FLOWS flows in $((SECONDS - start)) s"
NGINX_PID=$(nginx_baseline_start "$NGINX_PORT" 2)

CI_URL="http://127.0.0.1:$CI_PORT/c/bench-$((FLOWS / 2))?sub_id=bench&source=wrk&sub1=a&cost=0.01"
NGINX_URL="http://127.0.0.1:$NGINX_PORT/c/bench?sub_id=bench"
code=$(curl -s -o /dev/null -w '%{http_code}' -A "$UA" "$CI_URL")
[[ $code == 302 ]] || die "click-ingest answered $code for $CI_URL"

# One measured run: prints "requests seconds rps p50 p99 p999 errors non3xx cpu_us_per_redirect".
measure() {
  local pid=$1 url=$2 conns=$3 before after out
  before=$(cpu_ticks "$pid")
  out=$(WRK_HEADER="User-Agent: $UA" run_wrk "$url" "$SECONDS_PER_RUN" "$conns" "$((conns < 2 ? 1 : 2))")
  after=$(cpu_ticks "$pid")
  set -- $out
  local cpu_us
  cpu_us=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$1" 'BEGIN { if (n == 0) print "n/a"; else printf "%.1f", t * 1e6 / hz / n }')
  echo "$out $cpu_us"
}

# Warm-up, then alternate the two servers so drift on the shared machine hits both alike.
WRK_HEADER="User-Agent: $UA" run_wrk "$CI_URL" 3 "$CONNS" 2 >/dev/null
run_wrk "$NGINX_URL" 2 "$CONNS" 2 >/dev/null
declare -a CI NG
for ((r = 1; r <= ROUNDS; r++)); do
  NG+=("$(measure "$NGINX_PID" "$NGINX_URL" "$CONNS")")
  CI+=("$(measure "$CI_PID" "$CI_URL" "$CONNS")")
done

# Best round of each (the least disturbed by other work on the machine).
best() { printf '%s\n' "$@" | sort -k3 -n -r | head -1; }
read -r ci_n _ ci_rps ci_p50 ci_p99 ci_p999 ci_err ci_non ci_cpu <<<"$(best "${CI[@]}")"
read -r ng_n _ ng_rps ng_p50 ng_p99 ng_p999 ng_err ng_non ng_cpu <<<"$(best "${NG[@]}")"
rss=$(peak_rss_mib "$CI_PID")

# Latency at ~80% of click-ingest's own peak: wrk cannot pace requests, so fewer
# connections (closed loop) bring the rate down; take the run closest to 80%.
target=$(awk -v p="$ci_rps" 'BEGIN { printf "%.0f", p * 0.8 }')
at80=""
for c in 1 2 4 8 16 32; do
  line=$(measure "$CI_PID" "$CI_URL" "$c")
  rps=$(awk '{ print $3 }' <<<"$line")
  at80="$c $line"
  awk -v r="$rps" -v t="$target" 'BEGIN { exit !(r >= t) }' && break
done
read -r c80 _ _ rps80 p50_80 p99_80 p999_80 _ _ _ <<<"$at80"
delivered=$(curl -s "http://127.0.0.1:$CI_PORT/metrics" | awk '/^traffsure_click_deliveries_total\{result="delivered"\}/ { print $2 }')
spilled=$(curl -s "http://127.0.0.1:$CI_PORT/metrics" | awk '/^traffsure_click_deliveries_total\{result="spilled"\}/ { print $2 }')

cat <<EOF
Command: \`make bench BENCH=click\` (bench/click.sh: wrk -t2 -c$CONNS, ${SECONDS_PER_RUN}s per run, best of $ROUNDS alternating rounds; $FLOWS flows loaded; $(nproc) cores shared by wrk, both servers, Kafka and ClickHouse)

| server | redirects/s | p50 ms | p99 ms | p99.9 ms | CPU µs / redirect | errors | non-3xx |
|---|---|---|---|---|---|---|---|
| nginx \`return 302\` (2 workers) | $ng_rps | $ng_p50 | $ng_p99 | $ng_p999 | $ng_cpu | $ng_err | $ng_non |
| click-ingest (2 workers, Kafka producing) | $ci_rps | $ci_p50 | $ci_p99 | $ci_p999 | $ci_cpu | $ci_err | $ci_non |
| ratio click-ingest / nginx | $(ratio "$ci_rps" "$ng_rps") | | | | $(ratio "$ci_cpu" "$ng_cpu") | | |

- click-ingest peak RSS under load with $FLOWS flows: **$rss MiB**
- click-ingest at ~80% of its peak ($target/s wanted; wrk -c$c80 gave $rps80/s): p50 $p50_80 ms, p99 **$p99_80 ms**, p99.9 $p999_80 ms
- click events delivered to Kafka during the run: ${delivered:-0}; spilled: ${spilled:-0}
- all rounds (requests seconds rps p50 p99 p99.9 errors non3xx cpu_us): nginx: $(printf '[%s] ' "${NG[@]}"); click-ingest: $(printf '[%s] ' "${CI[@]}")
EOF

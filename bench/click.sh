#!/usr/bin/env bash
# bench/click.sh — click-ingest (release build, producing to the real Kafka, 10,000 flows
# loaded, GeoIP on) against two baselines answering a constant 302 in the same run: nginx,
# and actix-web alone (the `actix_floor` example, same worker count as click-ingest), with
# wrk on loopback. Prints redirects/s, latency percentiles, server CPU per redirect (all
# threads: click-ingest with librdkafka; nginx master and workers), the ratios, where
# click-ingest's CPU goes (actix floor, its own request work, librdkafka's threads), peak
# RSS of click-ingest, and latency at about 80% of click-ingest's own peak.
# Env: BENCH_SECONDS (default 10), BENCH_CONNECTIONS (64), BENCH_FLOWS (10000),
#      BENCH_ROUNDS (3), BENCH_LATENCY (1; 0 skips the 80%-of-peak latency runs),
#      BENCH_UA_MIX (1: each request carries a user agent from uap-core's corpus, Zipf-
#      weighted, see ua_mix_lua in lib.sh; 0: one Chrome user agent on every request),
#      BENCH_CLICK_BIN (default target/release/click-ingest: compare two builds),
#      BENCH_CLICK_MAX_QUEUED (default: the service's own, 50000; e.g. 20000 makes the
#      producer queue fill under load, so the run shows how the spill file copes),
#      BENCH_WRK_POLICY (batch: the measured rounds run wrk under SCHED_BATCH so that it
#      does not preempt the server it waits on, see run_wrk in lib.sh; other: the method
#      before 2026-11-22 12:10 UTC; the latency runs always use the normal policy)
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

SECONDS_PER_RUN=${BENCH_SECONDS:-10}
CONNS=${BENCH_CONNECTIONS:-64}
FLOWS=${BENCH_FLOWS:-10000}
ROUNDS=${BENCH_ROUNDS:-3}
ROUND_POLICY=${BENCH_WRK_POLICY:-batch}
LATENCY=${BENCH_LATENCY:-1}
WORKERS=2
UA="Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
UA_MIX=${BENCH_UA_MIX:-1}
# librdkafka's threads (`rdk:main`, `rdk:broker…`) and rdkafka's delivery-report poller;
# the poller alone (it has work for failed deliveries only).
KAFKA_THREADS='^(rdk:|producer pol)'
POLL_THREADS='^producer pol'

bench_install
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
BIN=${BENCH_CLICK_BIN:-$ROOT/target/release/click-ingest}
[[ -x $BIN ]] || die "$BIN is missing: run make build-release (make bench does)"
(cd "$ROOT" && cargo build -q --release --locked -p click-ingest --examples) >&2
FLOOR_BIN="$ROOT/target/release/examples/actix_floor"

PREFIX="bench-$(date +%s)-$$."
CI_PORT=18080
NGINX_PORT=18090
FLOOR_PORT=18091
DIR="$BENCH_DIR/click"
mkdir -p "$DIR"
rm -rf "$DIR"/clicks.spill*  # a file (spill file) or a directory (click log)

log "seeding $FLOWS flows into ${PREFIX}flows"
"$ROOT/target/release/examples/seed_flows" 127.0.0.1:9092 "$PREFIX" "$FLOWS" >&2

CLICK_PID=
NGINX_PID=
FLOOR_PID=
# shellcheck disable=SC2015 # `|| true` covers an unset PID, a failed kill and a failed wait alike.
cleanup() {
  [[ -n $CLICK_PID ]] && kill "$CLICK_PID" 2>/dev/null && wait "$CLICK_PID" 2>/dev/null || true
  [[ -n $FLOOR_PID ]] && kill "$FLOOR_PID" 2>/dev/null && wait "$FLOOR_PID" 2>/dev/null || true
  [[ -n $NGINX_PID ]] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null || true
  # A run writes a few GB of clicks; left on the shared broker they slow the next runs.
  "$ROOT/target/release/examples/drop_topics" 127.0.0.1:9092 "$PREFIX" >&2 || true
  return 0
}
trap cleanup EXIT

start=$SECONDS
click_ingest_start "$BIN" "$CI_PORT" "$PREFIX" "$DIR/clicks.spill" "$DIR/click-ingest.log"
CI_PID=$CLICK_PID
log "click-ingest ready with $FLOWS flows in $((SECONDS - start)) s"
# Resident set before any request: the data loaded, flows, GeoIP; the load adds the rest.
rss_ready=$(awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$CI_PID/status")
NGINX_PID=$(nginx_baseline_start "$NGINX_PORT" "$WORKERS")
"$FLOOR_BIN" "127.0.0.1:$FLOOR_PORT" "$WORKERS" >"$DIR/actix-floor.log" 2>&1 &
FLOOR_PID=$!
wait_port "$FLOOR_PORT" 10 || die "actix floor did not listen on $FLOOR_PORT (see $DIR/actix-floor.log)"

CI_URL="http://127.0.0.1:$CI_PORT/c/bench-$((FLOWS / 2))?sub_id=bench&source=wrk&sub1=a&cost=0.01"
NGINX_URL="http://127.0.0.1:$NGINX_PORT/c/bench?sub_id=bench"
FLOOR_URL="http://127.0.0.1:$FLOOR_PORT/c/bench?sub_id=bench"
code=$(curl -s -o /dev/null -w '%{http_code}' -A "$UA" "$CI_URL")
[[ $code == 302 ]] || die "click-ingest answered $code for $CI_URL"

# The shared Kafka broker's process: its CPU per redirect is reported beside the server's.
BROKER_PID=$(running_pid kafka || echo "")

# One measured run: prints "requests seconds rps p50 p99 p999 errors non3xx cpu_us
# kafka_cpu_us broker_cpu_us poll_cpu_us": CPU per redirect of the whole server, of
# librdkafka's threads alone, of the Kafka broker over the same run, and of the
# delivery-report poller.
measure() {
  local pid=$1 url=$2 conns=$3 policy=${4:-other} before after kbefore kafter bbefore=0 bafter=0 pbefore pafter out
  before=$(cpu_ticks "$pid")
  kbefore=$(cpu_ticks_threads "$pid" "$KAFKA_THREADS")
  pbefore=$(cpu_ticks_threads "$pid" "$POLL_THREADS")
  [[ -n $BROKER_PID ]] && bbefore=$(cpu_ticks "$BROKER_PID")
  out=$(WRK_HEADER="$UA_HEADER" BENCH_WRK_POLICY=$policy run_wrk "$url" "$SECONDS_PER_RUN" "$conns" "$((conns < 2 ? 1 : 2))")
  after=$(cpu_ticks "$pid")
  kafter=$(cpu_ticks_threads "$pid" "$KAFKA_THREADS")
  pafter=$(cpu_ticks_threads "$pid" "$POLL_THREADS")
  [[ -n $BROKER_PID ]] && bafter=$(cpu_ticks "$BROKER_PID")
  # shellcheck disable=SC2086 # split on purpose: $1 is the request count wrk reported.
  set -- $out
  echo "$out $(per_request $((after - before)) "$1") $(per_request $((kafter - kbefore)) "$1") $(per_request $((bafter - bbefore)) "$1") $(per_request $((pafter - pbefore)) "$1")"
}

# Warm-up, then alternate the servers so drift on the shared machine hits all alike.
# click-ingest's warm-up is longer: it also warms the broker's JVM on its new topic.
if ((UA_MIX)); then
  ua_mix_lua "$DIR/ua-mix.lua"
  export WRK_LUA="$DIR/ua-mix.lua"
  UA_HEADER=
else
  UA_HEADER="User-Agent: $UA"
fi
WRK_HEADER="$UA_HEADER" run_wrk "$CI_URL" 10 "$CONNS" 2 >/dev/null
run_wrk "$NGINX_URL" 2 "$CONNS" 2 >/dev/null
run_wrk "$FLOOR_URL" 2 "$CONNS" 2 >/dev/null
declare -a CI NG FL CN
for ((r = 1; r <= ROUNDS; r++)); do
  NG+=("$(measure "$NGINX_PID" "$NGINX_URL" "$CONNS" "$ROUND_POLICY")")
  FL+=("$(measure "$FLOOR_PID" "$FLOOR_URL" "$CONNS" "$ROUND_POLICY")")
  CI+=("$(measure "$CI_PID" "$CI_URL" "$CONNS" "$ROUND_POLICY")")
  # click-ingest with wrk under the normal policy too: the peak its latency is taken at.
  [[ $ROUND_POLICY == other ]] || CN+=("$(measure "$CI_PID" "$CI_URL" "$CONNS" other)")
done

# The median round of each by redirects/s (the upper one of an even count): one lucky or
# disturbed round on the shared cores moves neither the figures nor the ratios.
median() { printf '%s\n' "$@" | sort -k3 -n -r | sed -n "$(((${#@} + 1) / 2))p"; }
read -r _ _ ci_rps ci_p50 ci_p99 ci_p999 ci_err ci_non ci_cpu ci_kafka ci_broker ci_poll <<<"$(median "${CI[@]}")"
read -r _ _ ng_rps ng_p50 ng_p99 ng_p999 ng_err ng_non ng_cpu _ _ <<<"$(median "${NG[@]}")"
read -r _ _ fl_rps fl_p50 fl_p99 fl_p999 fl_err fl_non fl_cpu _ _ <<<"$(median "${FL[@]}")"
((${#CN[@]})) || CN=("${CI[@]}")
read -r _ _ cn_rps cn_p50 cn_p99 cn_p999 cn_err cn_non cn_cpu _ _ _ <<<"$(median "${CN[@]}")"
ci_http=$(awk -v a="$ci_cpu" -v b="$ci_kafka" 'BEGIN { printf "%.2f", a - b }')
ci_own=$(awk -v a="$ci_http" -v b="$fl_cpu" 'BEGIN { printf "%.2f", a - b }')
rss=$(peak_rss_mib "$CI_PID")
# What the resident set is made of when the load stops: anonymous memory (heaps, stacks),
# file pages (the binary, the GeoIP file, the click log's mapped segments) and shared memory.
rss_parts=$(awk '/^Rss(Anon|File|Shmem):/ { printf "%s%s %.1f", sep, tolower(substr($1, 4, length($1) - 4)), $2 / 1024; sep = ", " }' "/proc/$CI_PID/status")

# Latency at ~80% of click-ingest's own peak with wrk under the normal policy (the policy
# the latency runs use): wrk cannot pace requests, so fewer connections (closed loop)
# bring the rate down; take the first run reaching 80%.
target=$(awk -v p="$cn_rps" 'BEGIN { printf "%.0f", p * 0.8 }')
at80="- 0 0 n/a n/a n/a n/a 0 0 n/a n/a n/a n/a"
if ((LATENCY)); then
  for c in 1 2 4 8 12 16 24 32; do
    line=$(measure "$CI_PID" "$CI_URL" "$c")
    rps=$(awk '{ print $3 }' <<<"$line")
    at80="$c $line"
    awk -v r="$rps" -v t="$target" 'BEGIN { exit !(r >= t) }' && break
  done
fi
read -r c80 _ _ rps80 p50_80 p99_80 p999_80 _ _ _ _ _ <<<"$at80"
metric() { curl -s "http://127.0.0.1:$CI_PORT/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
# After the load: how long the spill file takes to drain back to Kafka (bounded to 60 s).
pending_at_end=$(metric traffsure_click_spill_pending_bytes)
drain_start=$(date +%s.%N)
for _ in $(seq 600); do
  [[ "$(metric traffsure_click_spill_pending_bytes)" == 0 ]] && break
  sleep 0.1
done
pending_after=$(metric traffsure_click_spill_pending_bytes)
drain_s=$(awk -v a="$drain_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
queued=$(metric 'traffsure_click_deliveries_total{result="queued"}')
spilled=$(metric 'traffsure_click_deliveries_total{result="spilled"}')
replayed=$(metric 'traffsure_click_deliveries_total{result="replayed"}')

cat <<EOF
Command: \`make bench BENCH=click\` (bench/click.sh: wrk -t2 -c$CONNS under scheduling policy $ROUND_POLICY, ${SECONDS_PER_RUN}s per run, median of $ROUNDS rounds alternating the three servers; $FLOWS flows loaded; $(nproc) cores shared by wrk, the servers, Kafka and ClickHouse; load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg))

| server | redirects/s | p50 ms | p99 ms | p99.9 ms | CPU µs / redirect | errors | non-3xx |
|---|---|---|---|---|---|---|---|
| nginx \`return 302\` ($WORKERS workers) | $ng_rps | $ng_p50 | $ng_p99 | $ng_p999 | $ng_cpu | $ng_err | $ng_non |
| actix-web floor, constant 302 ($WORKERS workers) | $fl_rps | $fl_p50 | $fl_p99 | $fl_p999 | $fl_cpu | $fl_err | $fl_non |
| click-ingest ($WORKERS workers, Kafka producing) | $ci_rps | $ci_p50 | $ci_p99 | $ci_p999 | $ci_cpu | $ci_err | $ci_non |
| click-ingest, wrk under the normal policy | $cn_rps | $cn_p50 | $cn_p99 | $cn_p999 | $cn_cpu | $cn_err | $cn_non |
| ratio actix floor / nginx | $(ratio "$fl_rps" "$ng_rps") | | | | $(ratio "$fl_cpu" "$ng_cpu") | | |
| ratio click-ingest / nginx | $(ratio "$ci_rps" "$ng_rps") | | | | $(ratio "$ci_cpu" "$ng_cpu") | | |

- click-ingest's $ci_cpu µs per redirect: actix-web floor $fl_cpu + click-ingest's own work on the HTTP threads $ci_own + librdkafka's threads $ci_kafka (of which the delivery-report poller ${ci_poll:-n/a}; not counted above: the Kafka broker used ${ci_broker:-n/a} µs per redirect on the same cores)
- click-ingest peak RSS under load with $FLOWS flows: **$rss MiB** (resident when ready, before any request: $rss_ready MiB; when the load stopped, in MiB: $rss_parts)
- user agents: $(if ((UA_MIX)); then echo "uap-core corpus mix (5,000 distinct, Zipf)"; else echo "one Chrome user agent"; fi); per-worker cache hits $(metric 'traffsure_user_agent_cache_total{result="hit"}'), misses $(metric 'traffsure_user_agent_cache_total{result="miss"}') ($(awk -v h="$(metric 'traffsure_user_agent_cache_total{result="hit"}')" -v m="$(metric 'traffsure_user_agent_cache_total{result="miss"}')" 'BEGIN { if (h + m == 0) print "n/a"; else printf "%.2f %% hit rate", 100 * h / (h + m) }'))
- click-ingest at ~80% of its peak under the normal policy ($target/s wanted; wrk -c$c80 gave $rps80/s): p50 $p50_80 ms, p99 **$p99_80 ms**, p99.9 $p999_80 ms
- click events during the run (producer queue limit ${BENCH_CLICK_MAX_QUEUED:-50000}): ${queued:-0} handed straight to Kafka's queue; ${spilled:-0} through the spill file, of which ${replayed:-0} replayed; spill bytes pending when the load stopped: ${pending_at_end:-n/a}, drained to ${pending_after:-n/a} in ${drain_s} s
- all rounds (requests seconds rps p50 p99 p99.9 errors non3xx cpu_us kafka_cpu_us broker_cpu_us poll_cpu_us): nginx: $(printf '[%s] ' "${NG[@]}"); actix floor: $(printf '[%s] ' "${FL[@]}"); click-ingest: $(printf '[%s] ' "${CI[@]}"); click-ingest, normal policy: $(printf '[%s] ' "${CN[@]}")
EOF

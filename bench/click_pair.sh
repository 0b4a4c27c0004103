#!/usr/bin/env bash
# bench/click_pair.sh — two click-ingest builds side by side: both run at once on the same
# 10,000 flows, the same Kafka topic and GeoIP file, and wrk (the uap-core user-agent mix,
# as bench/click.sh sends) loads them in turn, alternating which goes first. Prints each
# pair's CPU per redirect (user + system, all threads) for A and B, the ratio B / A and its
# median, and each build's peak RSS. What the other work on the shared cores does to one
# build it does to the other within seconds, so the ratio moves far less than either
# build's ratio to nginx from run to run; bench/click.sh stays the figure the targets read.
# Run with A = B (the default under make bench), the spread of the ratios is the method's
# own noise.
# Env: BENCH_CLICK_BIN_A (default target/release/click-ingest), BENCH_CLICK_BIN_B (default
#      the same), BENCH_PAIRS (4), BENCH_SECONDS (10), BENCH_CONNECTIONS (64),
#      BENCH_FLOWS (10000).
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

A=${BENCH_CLICK_BIN_A:-$ROOT/target/release/click-ingest}
B=${BENCH_CLICK_BIN_B:-$A}
PAIRS=${BENCH_PAIRS:-4}
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
CONNS=${BENCH_CONNECTIONS:-64}
FLOWS=${BENCH_FLOWS:-10000}
for bin in "$A" "$B"; do
  [[ -x $bin ]] || die "$bin is missing: run make build-release (make bench does)"
done

bench_install
build_release_if_missing "$ROOT/target/release/examples/seed_flows" "$ROOT/target/release/examples/drop_topics"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
PREFIX="bench-pair-$(date +%s)-$$."
DIR="$BENCH_DIR/click-pair"
rm -rf "$DIR"
mkdir -p "$DIR"
log "seeding $FLOWS flows into ${PREFIX}flows"
"$ROOT/target/release/examples/seed_flows" 127.0.0.1:9092 "$PREFIX" "$FLOWS" >&2

PID_A=
CLICK_PID=
cleanup() {
  local pid
  # The first build, and the last one started (the second, or whichever failed to start).
  for pid in ${PID_A:+"$PID_A"} ${CLICK_PID:+"$CLICK_PID"}; do
    if kill "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
    fi
  done
  "$ROOT/target/release/examples/drop_topics" 127.0.0.1:9092 "$PREFIX" >&2 || true
  return 0
}
trap cleanup EXIT

PORT_A=18082
PORT_B=18083
click_ingest_start "$A" "$PORT_A" "$PREFIX" "$DIR/a.spill" "$DIR/a.log"
PID_A=$CLICK_PID
click_ingest_start "$B" "$PORT_B" "$PREFIX" "$DIR/b.spill" "$DIR/b.log"
PID_B=$CLICK_PID
url() { echo "http://127.0.0.1:$1/c/bench-$((FLOWS / 2))?sub_id=bench&source=wrk&sub1=a&cost=0.01"; }
for port in $PORT_A $PORT_B; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "$(url "$port")")
  [[ $code == 302 ]] || die "click-ingest on $port answered $code"
done

ua_mix_lua "$DIR/ua-mix.lua"
export WRK_LUA="$DIR/ua-mix.lua" BENCH_WRK_POLICY=batch
# CPU µs per redirect of PID over one run against PORT.
measure() {
  local pid=$1 port=$2 before after out
  before=$(cpu_ticks "$pid")
  out=$(run_wrk "$(url "$port")" "$SECONDS_PER_RUN" "$CONNS" 2)
  after=$(cpu_ticks "$pid")
  per_request $((after - before)) "${out%% *}"
}
# Warm-up: both builds' caches, the broker's JVM on the topic.
run_wrk "$(url $PORT_A)" 5 "$CONNS" 2 >/dev/null
run_wrk "$(url $PORT_B)" 5 "$CONNS" 2 >/dev/null
rows=()
ratios=()
for ((p = 1; p <= PAIRS; p++)); do
  if ((p % 2)); then
    a=$(measure "$PID_A" $PORT_A)
    b=$(measure "$PID_B" $PORT_B)
  else
    b=$(measure "$PID_B" $PORT_B)
    a=$(measure "$PID_A" $PORT_A)
  fi
  r=$(awk -v a="$a" -v b="$b" 'BEGIN { if (a == 0) print "n/a"; else printf "%.3f", b / a }')
  ratios+=("$r")
  rows+=("| $p | $(if ((p % 2)); then echo "A, B"; else echo "B, A"; fi) | $a | $b | $r |")
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }')

cat <<EOF
Command: \`make bench BENCH=click_pair\` (bench/click_pair.sh: A = $A, B = $B; wrk -t2 -c$CONNS under SCHED_BATCH, ${SECONDS_PER_RUN}s per run, $PAIRS pairs; $FLOWS flows; uap-core user-agent mix; load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg))

| pair | order | A CPU µs / redirect | B CPU µs / redirect | B / A |
|---|---|---|---|---|
$(printf '%s\n' "${rows[@]}")

- median B / A: **$median**
- peak RSS: A $(peak_rss_mib "$PID_A") MiB, B $(peak_rss_mib "$PID_B") MiB
EOF

#!/usr/bin/env bash
# bench/sink.sh — the sink (release build) on the local Kafka and ClickHouse:
#   1. catching up a backlog: 1,000,000 clicks already in Kafka, rows/s into ClickHouse,
#      beside two baselines run at the end, on the same machine: ClickHouse inserting the
#      same number of rows itself (INSERT ... SELECT FROM numbers) into `clicks` with its
#      materialized views (the rollup and the checkpoint, as the sink's inserts run them),
#      and into a copy of the table without views. The first ratio says how much of
#      ClickHouse's own speed the sink uses; the two baselines give the views' share;
#   2. click-to-queryable latency at 10,000 clicks/s for 20 s (probe clicks every 100 ms,
#      polled in ClickHouse every 100 ms);
#   3. the sink's peak RSS over both.
# Topics and database are private to the run (prefix bench-sink-<time>.); the database is
# dropped at the end.
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

BACKLOG=${SINK_BENCH_BACKLOG:-1000000}
RATE=${SINK_BENCH_RATE:-10000}
SECONDS_STREAM=${SINK_BENCH_SECONDS:-20}
PORT=${SINK_BENCH_PORT:-19102}
CH=http://127.0.0.1:8123
RUN=$(date +%s)
PREFIX="bench-sink-$RUN."
DB="bench_sink_$RUN"
BIN="$ROOT/target/release"
[[ -x "$BIN/sink" && -x "$BIN/sink-load" ]] || die "build first: cargo build --release -p sink"

ch() { curl -sS --fail-with-body "$CH/?database=$DB" --data-binary "$1"; }
now_ms() { date +%s%3N; }

SINK_PID=""
cleanup() {
  if [[ -n "$SINK_PID" ]]; then
    kill "$SINK_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$SINK_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SINK_PID" 2>/dev/null || true
  fi
  curl -sS "$CH/" --data-binary "DROP DATABASE IF EXISTS $DB" >/dev/null || true
}
trap cleanup EXIT

log "sink bench: producing a backlog of $BACKLOG clicks"
"$BIN/sink-load" backlog 127.0.0.1:9092 "$PREFIX" "$BACKLOG" >/dev/null

TRAFFSURE__HTTP__BIND=127.0.0.1:$PORT TRAFFSURE__KAFKA__TOPIC_PREFIX=$PREFIX \
  TRAFFSURE__CLICKHOUSE__DATABASE=$DB TRAFFSURE__GROUP_ID="bench-sink-$RUN" \
  TRAFFSURE__TELEMETRY__LOG_LEVEL=warn \
  "$BIN/sink" >"$BENCH_DIR/sink-$RUN.log" 2>&1 &
SINK_PID=$!

# Rows/s from the first row in ClickHouse to the last.
start_rows=0
while :; do
  rows=$(ch "SELECT count() FROM clicks" 2>/dev/null) || rows=0 # no table before migrations
  if [[ $rows =~ ^[0-9]+$ ]] && ((rows > 0)); then start_rows=$rows; t0=$(now_ms); break; fi
  kill -0 "$SINK_PID" 2>/dev/null || die "sink exited: $(tail -5 "$BENCH_DIR/sink-$RUN.log")"
  sleep 0.05
done
cpu0=$(cpu_ticks "$SINK_PID")
while :; do
  rows=$(ch "SELECT count() FROM clicks")
  ((rows >= BACKLOG)) && break
  sleep 0.05
done
t1=$(now_ms)
cpu1=$(cpu_ticks "$SINK_PID")
sink_rps=$(awk -v n=$((BACKLOG - start_rows)) -v ms=$((t1 - t0)) 'BEGIN { printf "%.0f", n * 1000 / ms }')
sink_cpu=$(awk -v t=$((cpu1 - cpu0)) -v ms=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz / (ms / 1000) }')

dups=$(ch "SELECT count() - uniqExact(click_hash) FROM clicks")

log "sink bench: streaming $RATE clicks/s for $SECONDS_STREAM s"
read -r probes p50 p95 p99 pmax missing < <("$BIN/sink-load" stream 127.0.0.1:9092 "$PREFIX" "$RATE" "$SECONDS_STREAM" "$CH" "$DB")
rss=$(peak_rss_mib "$SINK_PID")

# The same rows as the backlog, made by ClickHouse itself. Into `clicks` (views run) on
# Kafka partitions the sink does not read, then into a copy without views.
baseline_select() {
  echo "SELECT concat('$1', toString(number)), toUInt32(1 + number % 20), now(), toInt64(now()) * 1000, concat('v', toString(number % 100000)), '203.0.113.7', 'US', 'Mozilla/5.0 (Linux; Android 14) Chrome/120', 'mobile', 'Android', 'Chrome', concat('s', toString(number % 50)), 'push', 1500, 'https://offer.example/land', toUInt16($2 + number % 4), number, 1 + number FROM system.numbers LIMIT $BACKLOG"
}
COLUMNS="click_hash, flow_id, ts, ts_ms, visitor_id, ip, country, user_agent, device, os, browser, sub_id, source, cost_micros, destination_url, kafka_partition, kafka_offset, kafka_fingerprint"
v0=$(now_ms)
ch "INSERT INTO clicks ($COLUMNS) $(baseline_select baseline 100)"
v1=$(now_ms)
views_rps=$(awk -v n="$BACKLOG" -v ms=$((v1 - v0)) 'BEGIN { printf "%.0f", n * 1000 / ms }')
ch "CREATE TABLE baseline_clicks AS clicks"
b0=$(now_ms)
ch "INSERT INTO baseline_clicks ($COLUMNS) $(baseline_select b 0)"
b1=$(now_ms)
base_rps=$(awk -v n="$BACKLOG" -v ms=$((b1 - b0)) 'BEGIN { printf "%.0f", n * 1000 / ms }')


cat <<MD
| measure | sink | baseline | ratio |
|---|---|---|---|
| backlog catch-up, $BACKLOG clicks (rows/s) | $sink_rps | $views_rps (ClickHouse INSERT … SELECT into \`clicks\`, views included) | $(ratio "$sink_rps" "$views_rps") |
| the same rows without materialized views (rows/s) | | $base_rps (INSERT … SELECT into a copy without views) | views cost $(ratio "$base_rps" "$views_rps")× |
| sink CPU during catch-up (cores) | $sink_cpu | | |
| duplicate rows after catch-up | $dups | | |
| click-to-queryable at $RATE clicks/s, $probes probes (ms) | p50 $p50, p95 $p95, p99 $p99, max $pmax, not seen $missing | | |
| sink peak RSS (MiB) | $rss | | |
| load average at the end (1 min) | $(cut -d' ' -f1 /proc/loadavg) | | |
MD

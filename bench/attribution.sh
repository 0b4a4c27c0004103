#!/usr/bin/env bash
# conversion-attribution throughput, transactions on, against the local Kafka:
#   1. clicks/s into state: CLICKS clicks produced while the service runs, until the group
#      committed the end of `clicks`; baseline = the same clicks produced with no consumer.
#   2. postbacks/s attributed end to end: POSTBACKS postbacks (each converts a distinct
#      click) until the group committed the end of `postbacks` (conversions are committed
#      in the same transactions); baseline = producing them alone.
#   3. state-store bytes per click (the per-partition log files).
#   4. restore time per million clicks: a new instance with an empty state directory
#      rebuilds from `clicks`; then one restarts on its own files.
#   5. memory per click: the resident set of that last instance once it has loaded the
#      state from its files, minus its resident set before (no partition loaded yet).
#   6. trim and compaction: on fresh topics, CLICKS clicks that leave the (default, 30-day)
#      attribution window TRIM_AFTER seconds after they are produced; the time to drop
#      them and rewrite the logs, and the log bytes before and after.
# ATTRIBUTION_BIN=<path> measures another build of the service (e.g. an older one) with the
# same load.
# Bounded: at most CLICKS + a few messages, every wait capped. Own topic prefix and group.
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

CLICKS=${CLICKS:-1000000}
POSTBACKS=${POSTBACKS:-100000}
PORT=${PORT:-19101}
TRIM_AFTER=${TRIM_AFTER:-40}
RUN=$(date +%s)-$$
WORK=$(mktemp -d /tmp/traffsure-bench-attribution.XXXXXX)
export BROKERS=${BROKERS:-127.0.0.1:9092}
export PREFIX="bench-attr-$RUN."
export GROUP="bench-attribution-$RUN"
PARTITIONS=4

cargo build --release --locked -q -p conversion-attribution --bin conversion-attribution \
  --example attribution_load
BIN=${ATTRIBUTION_BIN:-"$ROOT/target/release/conversion-attribution"}
LOAD="$ROOT/target/release/examples/attribution_load"

PID=
cleanup() {
  [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

start_service() { # STATE_DIR LOG
  TRAFFSURE__HTTP__BIND="127.0.0.1:$PORT" TRAFFSURE__KAFKA__BROKERS="$BROKERS" \
    TRAFFSURE__KAFKA__TOPIC_PREFIX="$PREFIX" TRAFFSURE__KAFKA__PARTITIONS=$PARTITIONS \
    TRAFFSURE__GROUP_ID="$GROUP" TRAFFSURE__INSTANCE_ID=bench TRAFFSURE__STATE_DIR="$1" \
    TRAFFSURE__TELEMETRY__LOG_FORMAT=json RUST_LOG=info "$BIN" >"$2" 2>&1 &
  PID=$!
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && return 0
    sleep 0.1
  done
  echo "conversion-attribution did not become ready" >&2
  cat "$2" >&2
  return 1
}
# shellcheck disable=SC2015 # `|| true` covers a failed kill and a failed wait alike.
stop_service() { kill "$PID" && wait "$PID" || true; PID=; }
# LOG MESSAGE FIELD: the sum of FIELD over the lines of LOG with MESSAGE (0 when there are
# none, e.g. an older build that logs no trims).
sum_field() {
  { grep "$2" "$1" || true; } | { grep -o "\"$3\":[0-9]*" || true; } |
    awk -F: '{ s += $2 } END { print s + 0 }'
}
sum_ms() { sum_field "$1" "$2" elapsed_ms; }
load_ms() { sum_ms "$1" "partition state loaded"; }
now() { date +%s.%N; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# Baseline: producing alone (a separate prefix, so the runs do not share topics).
base_clicks=$(PREFIX="bench-attr-base-$RUN." "$LOAD" clicks 0 "$CLICKS")
base_postbacks=$(PREFIX="bench-attr-base-$RUN." "$LOAD" postbacks "$POSTBACKS" $((CLICKS / POSTBACKS)))

"$LOAD" clicks 0 4 >/dev/null # topics exist, every partition has a click to load on
start_service "$WORK/state" "$WORK/run1.log"
sleep 1
rss_start=$(rss_kib "$PID")
t0=$(now)
"$LOAD" clicks 4 "$CLICKS" >/dev/null
"$LOAD" wait clicks 600 >/dev/null
t1=$(now)
rss_clicks=$(rss_kib "$PID")
clicks_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
clicks_rate=$(awk -v n="$CLICKS" -v s="$clicks_s" 'BEGIN { printf "%.0f", n / s }')
base_clicks_rate=$(awk -v n="$CLICKS" -v s="$base_clicks" 'BEGIN { printf "%.0f", n / s }')

t0=$(now)
"$LOAD" postbacks "$POSTBACKS" $((CLICKS / POSTBACKS)) >/dev/null
"$LOAD" wait postbacks 600 >/dev/null
t1=$(now)
pb_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
pb_rate=$(awk -v n="$POSTBACKS" -v s="$pb_s" 'BEGIN { printf "%.0f", n / s }')
base_pb_rate=$(awk -v n="$POSTBACKS" -v s="$base_postbacks" 'BEGIN { printf "%.0f", n / s }')
rss=$(peak_rss_mib "$PID")
cpu=$(cpu_ticks "$PID")
stop_service

bytes=$(du -sb "$WORK/state" | cut -f1)
per_click=$(awk -v b="$bytes" -v n="$CLICKS" 'BEGIN { printf "%.1f", b / n }')

# Restore from the clicks topic into an empty state directory, then from the files.
start_service "$WORK/state-new" "$WORK/run2.log"
"$LOAD" clicks $((CLICKS + 4)) 4 >/dev/null # one new click per partition triggers the loads
"$LOAD" wait clicks 600 >/dev/null
from_topic_ms=$(load_ms "$WORK/run2.log")
stop_service
start_service "$WORK/state-new" "$WORK/run3.log"
sleep 1
rss_idle=$(rss_kib "$PID")
"$LOAD" clicks $((CLICKS + 8)) 4 >/dev/null
"$LOAD" wait clicks 600 >/dev/null
sleep 1
rss_loaded=$(rss_kib "$PID")
from_file_ms=$(load_ms "$WORK/run3.log")
stop_service
# 6. Clicks that leave the window TRIM_AFTER s after the generator starts.
export PREFIX="bench-attr-trim-$RUN." GROUP="bench-attribution-trim-$RUN"
export TRAFFSURE__TRIM_INTERVAL_SECS=1 TRAFFSURE__WINDOW_GRACE_SECS=0
CLICK_AGE_MS=$((30 * 86400000 - TRIM_AFTER * 1000)) "$LOAD" clicks 0 "$CLICKS" >/dev/null
start_service "$WORK/state-trim" "$WORK/run4.log"
compacted=0
for _ in $(seq 1 $((TRIM_AFTER + 120))); do
  compacted=$(grep -c "state log compacted" "$WORK/run4.log" || true)
  [[ $compacted -ge $PARTITIONS ]] && break
  sleep 1
done
stop_service
unset TRAFFSURE__TRIM_INTERVAL_SECS TRAFFSURE__WINDOW_GRACE_SECS
trimmed_clicks=$(sum_field "$WORK/run4.log" "state trimmed" clicks)
trim_ms=$(sum_ms "$WORK/run4.log" "state trimmed")
compact_ms=$(sum_ms "$WORK/run4.log" "state log compacted")
log_before=$(sum_field "$WORK/run4.log" "state log compacted" before)
log_after=$(sum_field "$WORK/run4.log" "state log compacted" after)

per_click_bytes() { awk -v a="$1" -v b="$2" -v n="$CLICKS" 'BEGIN { printf "%.0f", (b - a) * 1024 / n }'; }
per_million() { awk -v ms="$1" -v n="$CLICKS" 'BEGIN { printf "%.2f", ms / 1000 * 1000000 / n }'; }

echo "clicks=$CLICKS postbacks=$POSTBACKS partitions=$PARTITIONS (release build, one instance)"
echo
echo "| measure | attribution | baseline (produce only) | ratio |"
echo "|---|---|---|---|"
echo "| clicks into state, per second | $clicks_rate ($clicks_s s) | $base_clicks_rate | $(ratio "$clicks_rate" "$base_clicks_rate") |"
echo "| postbacks attributed end to end, per second | $pb_rate ($pb_s s) | $base_pb_rate | $(ratio "$pb_rate" "$base_pb_rate") |"
echo
echo "| measure | value |"
echo "|---|---|"
echo "| state-store bytes per click | $per_click |"
echo "| restore from the clicks topic, s per million clicks | $(per_million "$from_topic_ms") |"
echo "| restore from the local state files, s per million clicks | $(per_million "$from_file_ms") |"
echo "| resident memory per click, loaded from the state files (bytes) | $(per_click_bytes "$rss_idle" "$rss_loaded") |"
echo "| resident memory per click, after step 1 (bytes, Kafka buffers included) | $(per_click_bytes "$rss_start" "$rss_clicks") |"
echo "| peak RSS of the service during steps 1-2, MiB | $rss |"
echo "| CPU ticks used by the service during steps 1-2 | $cpu |"
echo "| step 6: clicks trimmed out of the window (of $CLICKS), partitions compacted | $trimmed_clicks, $compacted of $PARTITIONS |"
echo "| step 6: trim time, s per million clicks | $(per_million "$trim_ms") |"
echo "| step 6: compaction time (all partitions), s | $(awk -v ms="$compact_ms" 'BEGIN { printf "%.2f", ms / 1000 }') |"
echo "| step 6: state log bytes before, after compaction | $log_before, $log_after |"

#!/usr/bin/env bash
# bench/pipeline.sh — the whole pipeline on one machine: all six services (release builds)
# against the running Kafka and ClickHouse, tracking links driven at stepped constant rates
# by tests/examples/pipeline_load.rs (open loop, the realistic user-agent mix of
# bench/click.sh), every 20th click converting through a real postback to postback-ingest.
# For each rate step: sustained clicks/s and postbacks/s, the lag of each consumer group
# (attribution, sink, dispatcher; from Kafka's committed offsets every 2 s), the
# click-to-queryable latency (one probe click a second on its own flow, each with a unique
# sub_id, timed from its 302 until `/api/v1/clicks` lists it), and the CPU of every process
# (the six services, the Kafka broker, ClickHouse, the load generator) per click, from
# /proc/<pid>/stat over the step and the drain after it. A step holds when the rate was
# sent and answered (≥ 95 %, ≤ 0.1 % errors or clicks dropped for want of a free
# connection), every group's lag at its end stays under BENCH_MAX_LAG_SECONDS of traffic,
# and every probe became queryable. Prints Markdown for BENCHMARKS.md.
#
# Isolated as an end-to-end test's stack is: its own topic prefix, consumer groups and
# ClickHouse database, deleted and dropped at the end. Bounded: every step lasts
# BENCH_STEP_SECONDS plus a drain of at most BENCH_DRAIN_SECONDS; loopback only.
#
# Env: BENCH_STEP_SECONDS (180), BENCH_RATES (clicks/s, "2000 5000 10000 15000 20000 25000
#      30000 40000"), BENCH_STOP_AFTER_FAIL (1: no higher step after one that did not
#      hold), BENCH_MAX_LAG_SECONDS (5), BENCH_DRAIN_SECONDS (120), BENCH_CONVERT_EVERY (20),
#      BENCH_MAX_IN_FLIGHT (512), BENCH_PARTITIONS (4), BENCH_UA_MIX (1), BENCH_LOAD_THREADS
#      (1), BENCH_PORT_BASE (18280: six ports from it), CLUSTER (1: the cluster stack of
#      deploy/local/cluster.sh, which must be up already; this script never starts it).
# Every TRAFFSURE__ setting in the environment reaches the six services (e.g.
# TRAFFSURE__BATCH_INTERVAL_MS for the sink) and is named in the output, secrets left out.
# On a machine shared with another benchmark, run it under a lock both take, e.g.
#   flock /tmp/bench.lock make bench BENCH=pipeline
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

STEP_SECONDS=${BENCH_STEP_SECONDS:-180}
read -r -a RATES <<<"${BENCH_RATES:-2000 5000 10000 15000 20000 25000 30000 40000}"
STOP_AFTER_FAIL=${BENCH_STOP_AFTER_FAIL:-1}
MAX_LAG_SECONDS=${BENCH_MAX_LAG_SECONDS:-5}
DRAIN_SECONDS=${BENCH_DRAIN_SECONDS:-120}
CONVERT_EVERY=${BENCH_CONVERT_EVERY:-20}
MAX_IN_FLIGHT=${BENCH_MAX_IN_FLIGHT:-512}
PARTITIONS=${BENCH_PARTITIONS:-4}
UA_MIX=${BENCH_UA_MIX:-1}
LOAD_THREADS=${BENCH_LOAD_THREADS:-1}
PORT_BASE=${BENCH_PORT_BASE:-18280}
CLUSTER=${CLUSTER:-0}
CLK_TCK=$(getconf CLK_TCK)

if ((CLUSTER)); then
  # The cluster stack's own settings (brokers, replication factor, ClickHouse server and
  # cluster name), as `make run CLUSTER=1` gives them to the services.
  while IFS='=' read -r key value; do
    [[ $key == TRAFFSURE__* ]] && export "$key=$value"
  done < <("$ROOT/deploy/local/cluster.sh" env)
  BROKERS=${TRAFFSURE__KAFKA__BROKERS:?cluster.sh env gave no brokers}
  CLICKHOUSE=${TRAFFSURE__CLICKHOUSE__URL:?cluster.sh env gave no ClickHouse}
  CH_CLUSTER=${TRAFFSURE__CLICKHOUSE__CLUSTER:?cluster.sh env gave no cluster name}
  ENGINES=(cluster-kafka1 cluster-kafka2 cluster-kafka3 cluster-clickhouse1 cluster-clickhouse2 cluster-zookeeper)
else
  BROKERS=127.0.0.1:9092
  CLICKHOUSE=http://127.0.0.1:8123
  CH_CLUSTER=""
  ENGINES=(kafka clickhouse)
fi
for e in "${ENGINES[@]}"; do
  running_pid "$e" >/dev/null || die "$e is not running (the bench uses the running stack; it never starts one)"
done

RUN="$(date +%s)-$$"
PREFIX="bench-pipe-$RUN."
DB="bench_pipe_${RUN//-/_}"
DIR="$BENCH_DIR/pipeline-$RUN"
mkdir -p "$DIR"
SERVICES=(click-ingest postback-ingest conversion-attribution sink postback-dispatcher reporting-api)
BIN="$ROOT/target/release"
LOAD_BIN="$BIN/examples/pipeline_load"
build_release_if_missing "${SERVICES[@]/#/$BIN/}" "$BIN/examples/drop_topics"
(cd "$ROOT" && cargo build -q --release --locked -p traffsure-tests --example pipeline_load) >&2

API_KEY="bench-pipeline-api-key-0001"
KEYS="1:bench-pipeline-click-hash-secret-0001"
GEOIP="$LOCAL_DIR/geoip/country.mmdb"
[[ -f $GEOIP ]] || GEOIP=""
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u '+%Y-%m-%d %H:%M')

declare -A PORT PID
i=0
for s in "${SERVICES[@]}"; do
  PORT[$s]=$((PORT_BASE + i))
  i=$((i + 1))
done

# shellcheck disable=SC2015 # `|| true` covers a failed kill and a failed wait alike.
cleanup() {
  local s
  for s in "${SERVICES[@]}"; do
    [[ -n ${PID[$s]:-} ]] && kill "${PID[$s]}" 2>/dev/null && wait "${PID[$s]}" 2>/dev/null || true
  done
  "$BIN/examples/drop_topics" "$BROKERS" "$PREFIX" >&2 || true
  curl -sS "$CLICKHOUSE/" --data-binary "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
  if [[ -n $CH_CLUSTER ]]; then
    local d
    for d in "$DB" "${DB}_distributed"; do
      curl -sS "$CLICKHOUSE/" --data-binary "DROP DATABASE IF EXISTS $d ON CLUSTER $CH_CLUSTER" >/dev/null 2>&1 || true
    done
  fi
  rm -rf "$DIR/state" "$DIR/clicks.spill" "$DIR/ua-corpus.txt" "$DIR/ua-mix.txt"
  return 0
}
trap cleanup EXIT

start_service() {
  local s=$1
  env TRAFFSURE__HTTP__BIND="127.0.0.1:${PORT[$s]}" \
    TRAFFSURE__KAFKA__BROKERS="$BROKERS" TRAFFSURE__KAFKA__TOPIC_PREFIX="$PREFIX" \
    TRAFFSURE__KAFKA__PARTITIONS="$PARTITIONS" \
    TRAFFSURE__CLICKHOUSE__URL="$CLICKHOUSE" TRAFFSURE__CLICKHOUSE__DATABASE="$DB" \
    TRAFFSURE__CLICK_HASH__KEYS="$KEYS" TRAFFSURE__CLICK_HASH__ACTIVE_KEY=1 \
    TRAFFSURE__GROUP_ID="bench-pipe-$RUN-$s" TRAFFSURE__STATE_DIR="$DIR/state" \
    TRAFFSURE__SPILL__PATH="$DIR/clicks.spill" TRAFFSURE__GEOIP__DATABASE="$GEOIP" \
    TRAFFSURE__API_KEYS="$API_KEY" TRAFFSURE__ADMIN__USERNAME=admin TRAFFSURE__ADMIN__PASSWORD="bench-pipeline-password" \
    TRAFFSURE__SESSION__SIGNING_KEY="bench-pipeline-session-signing-key-0001" \
    TRAFFSURE__TELEMETRY__LOG_LEVEL=warn \
    "$BIN/$s" >"$DIR/$s.log" 2>&1 &
  PID[$s]=$!
}

# Migrations first (the sink and reporting-api both run them; one at a time is quicker).
for s in "${SERVICES[@]}"; do
  start_service "$s"
  start=$SECONDS
  until curl -sf "http://127.0.0.1:${PORT[$s]}/readyz" >/dev/null; do
    kill -0 "${PID[$s]}" 2>/dev/null || die "$s exited (see $DIR/$s.log)"
    ((SECONDS - start < 180)) || die "$s not ready after 180 s (see $DIR/$s.log)"
    sleep 0.2
  done
done
log "six services ready (prefix $PREFIX, database $DB, logs in $DIR)"

API="http://127.0.0.1:${PORT[reporting-api]}"
CLICK="http://127.0.0.1:${PORT[click-ingest]}"
create_flow() { # SLUG NAME → flow id
  curl -sS --fail-with-body -H "Authorization: Bearer $API_KEY" -H 'Content-Type: application/json' \
    "$API/api/v1/flows" --data-binary "{\"name\":\"$2\",\"slug\":\"$1\",
      \"destination_url\":\"https://offer.example/o?c={click}&s={sub_id}&src={source}&co={country}&d={device}\",
      \"goals\":[{\"key\":\"sale\",\"payout\":\"2.5\"}]}" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}
FLOW_ID=$(create_flow pipeline "Pipeline bench")
PROBE_ID=$(create_flow pipeline-probe "Pipeline bench probes")
start=$SECONDS
until [[ $(curl -s -o /dev/null -w '%{http_code}' "$CLICK/c/pipeline-probe?sub_id=warm") == 302 &&
  $(curl -s -o /dev/null -w '%{http_code}' "$CLICK/c/pipeline?sub_id=warm") == 302 ]]; do
  ((SECONDS - start < 60)) || die "click-ingest does not redirect the bench flows after 60 s"
  sleep 0.2
done

UA_FILE=""
if ((UA_MIX)); then
  ua_corpus "$DIR/ua-corpus.txt"
  python3 - "$DIR/ua-corpus.txt" "$DIR/ua-mix.txt" <<'PY'
import random, sys
agents = sorted(set(l.rstrip("\n") for l in open(sys.argv[1], encoding="utf-8") if l.strip()))
agents = [a for a in agents if all(32 <= ord(c) < 127 for c in a)]
random.Random(7).shuffle(agents)
open(sys.argv[2], "w").write("".join(a + "\n" for a in agents[:5000]))
PY
  UA_FILE="$DIR/ua-mix.txt"
fi

T="$PREFIX"
GROUPS_SPEC="attribution=bench-pipe-$RUN-conversion-attribution:${T}clicks,${T}postbacks"
GROUPS_SPEC+=";sink=bench-pipe-$RUN-sink:${T}clicks,${T}conversions,${T}postback-log,${T}outbound-log"
GROUPS_SPEC+=";dispatcher=bench-pipe-$RUN-postback-dispatcher:${T}conversions,${T}clicks"

# CPU ticks of every measured process, in the order of PROCS.
PROCS=("${SERVICES[@]}" "${ENGINES[@]}")
proc_pid() {
  if [[ -n ${PID[$1]:-} ]]; then echo "${PID[$1]}"; else running_pid "$1"; fi
}
ticks_all() {
  local p out=()
  for p in "${PROCS[@]}"; do out+=("$(cpu_ticks "$(proc_pid "$p")")"); done
  echo "${out[*]}"
}
# µs per click: per_click TICKS CLICKS
per_click() {
  awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { if (n == 0) print "n/a"; else printf "%.1f", t * 1e6 / hz / n }'
}
field() { tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k { print $2 }'; }

ROWS=()
SENT_CLICKS=0
SENT_POSTBACKS=0
CPU_ROWS=()
LAG_ROWS=()
BEST="none of the steps"
for rate in "${RATES[@]}"; do
  log "step: $rate clicks/s for $STEP_SECONDS s"
  load_avg=$(cut -d' ' -f1 /proc/loadavg)
  read -r -a before <<<"$(ticks_all)"
  step_log="$DIR/step-$rate.log"
  LOAD_CLICK_URL="$CLICK/c/pipeline?sub_id=bench&source=pipeline&cost=0.01" \
    LOAD_POSTBACK_URL="http://127.0.0.1:${PORT[postback-ingest]}/postback" \
    LOAD_PROBE_URL="$CLICK/c/pipeline-probe?source=probe" LOAD_PROBE_FLOW="$PROBE_ID" \
    LOAD_API_URL="$API" LOAD_API_KEY="$API_KEY" LOAD_RATE="$rate" LOAD_SECONDS="$STEP_SECONDS" \
    LOAD_CONVERT_EVERY="$CONVERT_EVERY" LOAD_MAX_IN_FLIGHT="$MAX_IN_FLIGHT" LOAD_UA_FILE="$UA_FILE" \
    LOAD_BROKERS="$BROKERS" LOAD_GROUPS="$GROUPS_SPEC" LOAD_DRAIN_SECONDS="$DRAIN_SECONDS" \
    LOAD_THREADS="$LOAD_THREADS" \
    "$LOAD_BIN" >"$step_log" 2>"$DIR/step-$rate.err" || die "the load generator failed (see $DIR/step-$rate.err)"
  read -r -a after <<<"$(ticks_all)"
  summary=$(grep '^SUMMARY ' "$step_log" | tail -1)
  [[ -n $summary ]] || die "no SUMMARY in $step_log"
  clicks=$(field clicks "$summary")
  SENT_CLICKS=$((SENT_CLICKS + clicks))
  SENT_POSTBACKS=$((SENT_POSTBACKS + $(field postbacks "$summary")))
  cps=$(field clicks_per_s "$summary")
  pps=$(field postbacks_per_s "$summary")
  errors=$(($(field click_errors "$summary") + $(field postback_errors "$summary")))
  dropped=$(field dropped "$summary")
  gen_ticks=$(field cpu_ticks "$summary")
  p50=$(field probe_p50_ms "$summary")
  p95=$(field probe_p95_ms "$summary")
  unlisted=$(field probes_unlisted "$summary")
  lag_max=() lag_end=() held=1 why=()
  for g in attribution sink dispatcher; do
    lag_max+=("$(field "lag_max_$g" "$summary")")
    lag_end+=("$(field "lag_end_$g" "$summary")")
    awk -v l="${lag_end[-1]:-0}" -v r="$rate" -v s="$MAX_LAG_SECONDS" 'BEGIN { exit !(l > r * s) }' \
      && { held=0; why+=("$g lag"); }
  done
  awk -v c="$cps" -v r="$rate" 'BEGIN { exit !(c < 0.95 * r) }' && { held=0; why+=("rate"); }
  awk -v e="$((errors + dropped))" -v n="$((clicks + 1))" 'BEGIN { exit !(e > 0.001 * n) }' \
    && { held=0; why+=("errors/dropped"); }
  ((unlisted == 0)) || { held=0; why+=("$unlisted probes never listed"); }
  [[ $(field drain_s "$summary") != n/a ]] || { held=0; why+=("no drain in ${DRAIN_SECONDS}s"); }
  verdict=$(if ((held)); then echo "**yes**"; else echo "no ($(IFS=,; echo "${why[*]}"))"; fi)
  ROWS+=("| $rate | $cps | $pps | $errors / $dropped | $(field redirect_p50_ms "$summary") / $(field redirect_p99_ms "$summary") | $p50 / **$p95** | ${lag_max[0]} / ${lag_max[1]} / ${lag_max[2]} | ${lag_end[0]} / ${lag_end[1]} / ${lag_end[2]} | $(field drain_s "$summary") | $load_avg | $verdict |")
  cpu_row="| $rate |"
  total=0
  for k in "${!PROCS[@]}"; do
    d=$((after[k] - before[k]))
    total=$((total + d))
    cpu_row+=" $(per_click "$d" "$clicks") |"
  done
  total=$((total + gen_ticks))
  CPU_ROWS+=("$cpu_row $(per_click "$gen_ticks" "$clicks") | **$(per_click "$total" "$clicks")** |")
  # Lag over time: about eight samples over the step (messages; attribution/sink/dispatcher).
  n=$(grep -c '^LAG ' "$step_log" || true)
  every=$(((n + 7) / 8))
  LAG_ROWS+=("- $rate/s: $(awk -v e="$((every < 1 ? 1 : every))" '/^LAG / { if (i++ % e == 0) { gsub(/[a-z]+=/, ""); printf "%ss %s/%s/%s; ", int($2), $3, $4, $5 } }' "$step_log")")
  if ((held)); then
    BEST=$rate
  elif ((STOP_AFTER_FAIL)); then
    break
  fi
done

# Every redirected click and every accepted postback once in ClickHouse (each step drained).
ch() { curl -sS "$CLICKHOUSE/?database=$DB" --data-binary "$1"; }
STORED=$(ch "SELECT count(), uniqExact(click_hash) FROM clicks WHERE flow_id = $FLOW_ID AND sub_id = 'bench' FORMAT TSV")
CONVERTED=$(ch "SELECT count(), uniqExact(conversion_id) FROM conversions WHERE flow_id = $FLOW_ID FORMAT TSV")
PARTS=$(ch "SELECT count() FROM system.parts WHERE database = '$DB' AND active FORMAT TSV")
SETTINGS=$(env | grep '^TRAFFSURE__' | grep -Ev 'PASSWORD|SECRET|KEYS?=' | sort | tr '\n' ' ' || true)

header="| step | clicks/s | postbacks/s | errors / dropped | redirect p50 / p99 ms | click→queryable p50 / p95 ms | lag max (attr / sink / disp) | lag at end | drain s | load avg | held |"
cat <<EOF
Command: \`make bench BENCH=pipeline\` (bench/pipeline.sh; BENCH_STEP_SECONDS=$STEP_SECONDS, steps ${RATES[*]} clicks/s, every ${CONVERT_EVERY}th click converting, $PARTITIONS partitions, user agents: $(if ((UA_MIX)); then echo "uap-core mix"; else echo "one Chrome agent"; fi), $(if ((CLUSTER)); then echo "cluster stack"; else echo "single-node Kafka and ClickHouse"; fi)); started $STARTED UTC, commit $(cd "$ROOT" && git rev-parse --short HEAD); $(nproc) cores shared by the load generator, six services, Kafka and ClickHouse; load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)

Settings from the environment: ${SETTINGS:-none (the defaults)}.

Stored in ClickHouse after the last drain: clicks (rows, distinct hashes) $(tr '\t' ' ' <<<"$STORED") of $SENT_CLICKS redirected; conversions (rows, distinct ids) $(tr '\t' ' ' <<<"$CONVERTED") of $SENT_POSTBACKS postbacks accepted (rows above distinct: not merged yet, ReplacingMergeTree); $PARTS active parts in the database.

Highest rate that held for ${STEP_SECONDS} s with bounded lag (≤ ${MAX_LAG_SECONDS} s of traffic at the step's end): **$BEST$([[ $BEST == none* ]] || echo " clicks/s")**

$header
|---|---|---|---|---|---|---|---|---|---|---|
$(printf '%s\n' "${ROWS[@]}")

CPU µs per click, by process (over the step and its drain; the broker and ClickHouse also served anything else using them then):

| step | $(printf '%s | ' "${PROCS[@]}")load generator | all |
|---|$(for _ in "${PROCS[@]}"; do printf -- '---|'; done)---|---|
$(printf '%s\n' "${CPU_ROWS[@]}")

Consumer lag over time (messages behind the committed offsets, attribution/sink/dispatcher, at seconds into the step):
$(printf '%s\n' "${LAG_ROWS[@]}")
EOF

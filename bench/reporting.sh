#!/usr/bin/env bash
# bench/reporting.sh — reporting-api read latency over a large data set.
#
# Loads 10,000,000 clicks (30 days, 50 flows) and 300,000 conversions straight into a
# throwaway ClickHouse database (INSERT ... SELECT FROM numbers(); the materialized
# views fill the rollups as for real traffic), starts the release reporting-api on it,
# and measures, with sequential requests, the p50/p95 of:
#   * the dashboard (reads the rollups),
#   * a 30-day report grouped by flow × country,
#   * a filtered clicks page (flow, country, 7 days) and one filtered by country alone.
# Baseline, measured side by side: `SELECT 1` over ClickHouse's HTTP port (the floor of
# any request that asks ClickHouse anything) and reporting-api's /healthz.
# Usage: bench/reporting.sh   (make bench BENCH=reporting); REQUESTS=100 by default.
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

CLICKHOUSE=${TRAFFSURE_TEST_CLICKHOUSE:-http://127.0.0.1:8123}
CLICKS=${CLICKS:-10000000}
CONVERSIONS=${CONVERSIONS:-300000}
REQUESTS=${REQUESTS:-100}
DB="bench_reporting_$$"
PORT=${PORT:-18182}
KEY="bench-reporting-api-key-$$"
BIN="$ROOT/target/release/reporting-api"
[[ -x "$BIN" ]] || die "$BIN is missing: cargo build --release -p reporting-api"

ch() { curl -sS --fail-with-body "$CLICKHOUSE/?database=$1" --data-binary "$2"; }

API_PID=""
cleanup() {
  [[ -z "$API_PID" ]] || kill "$API_PID" 2>/dev/null || true
  ch default "DROP DATABASE IF EXISTS $DB" >/dev/null || true
}
trap cleanup EXIT

ch default "CREATE DATABASE $DB" >/dev/null
TRAFFSURE__HTTP__BIND="127.0.0.1:$PORT" TRAFFSURE__HTTP__WORKERS=2 \
  TRAFFSURE__CLICKHOUSE__URL="$CLICKHOUSE" TRAFFSURE__CLICKHOUSE__DATABASE="$DB" \
  TRAFFSURE__KAFKA__TOPIC_PREFIX="bench-reporting-$$." TRAFFSURE__API_KEYS="$KEY" \
  TRAFFSURE__ADMIN__PASSWORD="bench-password" RUST_LOG=warn \
  "$BIN" >"$BENCH_DIR/reporting-api.log" 2>&1 &
API_PID=$!
wait_ready "$PORT" 30 || die "reporting-api not ready (see $BENCH_DIR/reporting-api.log)"

# Dimensions follow the flow, as real traffic does (a flow buys a few countries and
# sources): each flow has six variants (v) of country, source, sub ID, device, OS and
# browser, so an hour of a flow adds at most six clicks_hourly rows.
start=$SECONDS
ch "$DB" "INSERT INTO clicks (click_hash, flow_id, ts, ts_ms, visitor_id, ip, country, device, os, browser,
    sub_id, source, sub1, cost_micros, destination_url, is_bot)
  SELECT concat('c', toString(number)), toUInt32(1 + f), t, toInt64(toUInt32(t)) * 1000 + number % 1000,
    toString(cityHash64(number) % 3000000), '10.1.2.3',
    ['US', 'DE', 'GB', 'FR', 'BR', 'IN', 'ID', 'MX', 'ES', 'IT'][(f + v % 3) % 10 + 1],
    ['mobile', 'desktop', 'tablet'][v % 3 + 1], ['Android', 'iOS', 'Windows'][v % 3 + 1],
    ['Chrome', 'Safari'][v % 2 + 1], concat('sub', toString(v)), concat('src', toString(f % 4)),
    concat('s1-', toString(number % 100)), toInt64(2000 + number % 5000), 'https://offer.example/',
    toUInt8(number % 40 = 0)
  FROM (SELECT number, number % 50 AS f, intDiv(number, 50) % 6 AS v,
               toDateTime(toUInt32(now()) - intDiv(number * 2592000, $CLICKS)) AS t FROM numbers($CLICKS))" >/dev/null
clicks_load=$((SECONDS - start))
start=$SECONDS
ch "$DB" "INSERT INTO conversions (conversion_id, version, click_hash, flow_id, goal, status, previous_status,
    revenue_micros, currency, uid, created_at, updated_at, country, source, sub_id)
  SELECT concat('v', toString(number)), 1, concat('c', toString(n)), toUInt32(1 + n % 50), ['sale', 'lead'][number % 2 + 1],
    ['approved', 'approved', 'pending', 'rejected'][number % 4 + 1], '', toInt64(1000000 + number % 50 * 100000), 'USD',
    concat('u', toString(number)), t, t,
    ['US', 'DE', 'GB', 'FR', 'BR', 'IN', 'ID', 'MX', 'ES', 'IT'][(n % 50 + intDiv(n, 50) % 6 % 3) % 10 + 1],
    concat('src', toString(n % 50 % 4)), concat('sub', toString(intDiv(n, 50) % 6))
  FROM (SELECT number, number * intDiv($CLICKS, $CONVERSIONS) AS n,
               toDateTime(toUInt32(now()) - intDiv(n * 2592000, $CLICKS)) AS t FROM numbers($CONVERSIONS))" >/dev/null
conversions_load=$((SECONDS - start))
rollup_rows=$(ch "$DB" "SELECT count() FROM clicks_hourly")
raw=$(ch "$DB" "SELECT count() FROM clicks")
[[ "$raw" == "$CLICKS" ]] || die "expected $CLICKS clicks, found $raw"

# p50 and p95 in ms of REQUESTS sequential GETs (after 5 warm-up requests).
latency() {
  local url=$1 auth=${2:-yes} times="$BENCH_DIR/reporting-times.txt" code
  local header=(-H "Authorization: Bearer $KEY")
  [[ $auth == yes ]] || header=()
  for _ in 1 2 3 4 5; do curl -s -o /dev/null "${header[@]}" "$url"; done
  : >"$times"
  for _ in $(seq 1 "$REQUESTS"); do
    code=$(curl -s -o /dev/null -w '%{http_code} %{time_total}\n' "${header[@]}" "$url")
    [[ ${code%% *} == 200 ]] || die "$url answered ${code%% *}"
    echo "${code#* }" >>"$times"
  done
  sort -n "$times" | awk '{ v[NR] = $1 * 1000 } END {
    printf "%.1f %.1f\n", v[int(NR * 0.50 + 0.5)], v[int(NR * 0.95 + 0.5)] }'
}

today=$(ch "$DB" "SELECT toString(today())")
month_ago=$(ch "$DB" "SELECT toString(today() - 29)")
week_ago=$(ch "$DB" "SELECT toString(today() - 6)")
api="http://127.0.0.1:$PORT/api/v1"
read -r base_p50 base_p95 < <(latency "$CLICKHOUSE/?query=SELECT%201" no)
read -r health_p50 health_p95 < <(latency "http://127.0.0.1:$PORT/healthz" no)
read -r dash_p50 dash_p95 < <(latency "$api/dashboard")
read -r report_p50 report_p95 < <(latency "$api/reports?group_by=flow,country&from=$month_ago&to=$today")
read -r clicks_p50 clicks_p95 < <(latency "$api/clicks?flow=7&country=DE&from=$week_ago&to=$today")
read -r country_p50 country_p95 < <(latency "$api/clicks?country=DE&from=$week_ago&to=$today")
report_rows=$(curl -s -H "Authorization: Bearer $KEY" "$api/reports?group_by=flow,country&from=$month_ago&to=$today" \
  | grep -o '"flow":' | wc -l)

echo "Data: $CLICKS clicks (loaded in ${clicks_load}s, $rollup_rows clicks_hourly rows), $CONVERSIONS conversions (${conversions_load}s); $REQUESTS sequential requests each."
echo
echo "| request | p50 ms | p95 ms | target p95 | p95 / SELECT 1 |"
echo "|---|---|---|---|---|"
echo "| baseline: ClickHouse \`SELECT 1\` over HTTP | $base_p50 | $base_p95 | | 1.00 |"
echo "| baseline: reporting-api \`/healthz\` | $health_p50 | $health_p95 | | $(ratio "$health_p95" "$base_p95") |"
echo "| \`/api/v1/dashboard\` (rollups) | $dash_p50 | $dash_p95 | < 50 | $(ratio "$dash_p95" "$base_p95") |"
echo "| 30-day report, flow × country ($report_rows rows) | $report_p50 | $report_p95 | < 500 | $(ratio "$report_p95" "$base_p95") |"
echo "| clicks page: flow + country + 7 days | $clicks_p50 | $clicks_p95 | < 200 | $(ratio "$clicks_p95" "$base_p95") |"
echo "| clicks page: country + 7 days (no flow) | $country_p50 | $country_p95 | | $(ratio "$country_p95" "$base_p95") |"

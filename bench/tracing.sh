#!/usr/bin/env bash
# bench/tracing.sh — what trace export costs on the postback edge. Two postback-ingest
# processes run side by side on the same Kafka: one without an OTLP endpoint (no span, no
# trace header: the baseline), one exporting every request's span over OTLP/HTTP to a
# local receiver and writing `traceparent` on each postback and log entry. wrk loads them
# in alternating rounds with the same valid postbacks; the table shows both and the ratio
# traced / untraced for throughput, latency and CPU per postback.
# Env: SECONDS_PER_RUN (default 10), CONNECTIONS (default 32), ROUNDS (default 2).
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-2}
HASHES=20000
KEYS="1:bench-tracing-secret-00001"
PLAIN_PORT=18191
TRACED_PORT=18192
OTLP_PORT=18193

bench_install
BIN="$ROOT/target/release/postback-ingest"
GEN="$ROOT/target/release/examples/click_hashes"
build_release_if_missing "$BIN" "$GEN"
for port in $PLAIN_PORT $TRACED_PORT $OTLP_PORT; do
  port_open 127.0.0.1 "$port" && die "port $port is in use"
done

dir="$BENCH_DIR/tracing"
mkdir -p "$dir"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# The OTLP receiver: accepts every export and counts the bytes received.
python3 - "$OTLP_PORT" "$dir/otlp-bytes" <<'PY' >"$dir/otlp.log" 2>&1 &
import http.server, sys
port, out = int(sys.argv[1]), sys.argv[2]
total = 0
class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global total
        total += len(self.rfile.read(int(self.headers.get("content-length", 0))))
        open(out, "w").write(str(total))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), Receiver).serve_forever()
PY
pids+=($!)
wait_port "$OTLP_PORT" || die "the OTLP receiver did not start (see $dir/otlp.log)"

prefix="bench-tracing-$(date +%s)."
start_edge() { # PORT OTLP_ENDPOINT LOG
  TRAFFSURE__HTTP__BIND="127.0.0.1:$1" \
    TRAFFSURE__HTTP__WORKERS=2 \
    TRAFFSURE__KAFKA__TOPIC_PREFIX="$prefix" \
    TRAFFSURE__CLICK_HASH__KEYS="$KEYS" \
    TRAFFSURE__TELEMETRY__LOG_LEVEL=warn \
    TRAFFSURE__TELEMETRY__OTLP_ENDPOINT="$2" \
    "$BIN" >"$3" 2>&1 &
  echo $!
}
plain_pid=$(start_edge "$PLAIN_PORT" "" "$dir/plain.log")
pids+=("$plain_pid")
traced_pid=$(start_edge "$TRACED_PORT" "http://127.0.0.1:$OTLP_PORT" "$dir/traced.log")
pids+=("$traced_pid")
for port in $PLAIN_PORT $TRACED_PORT; do
  wait_ready "$port" || die "postback-ingest on $port not ready (see $dir)"
done

"$GEN" "$HASHES" "$KEYS" 1 >"$dir/hashes.txt"
postbacks_lua "$dir/hashes.txt" "goal=sale&revenue=1.50" >"$dir/postbacks.lua"
first=$(head -1 "$dir/hashes.txt")
for port in $PLAIN_PORT $TRACED_PORT; do
  answer=$(curl -s "http://127.0.0.1:$port/postback?click=$first&goal=sale")
  [[ $answer == *'"accepted"'* ]] || die "postback not accepted on $port: $answer"
done

for port in $PLAIN_PORT $TRACED_PORT; do
  wrk -t 2 -c "$CONNECTIONS" -d 2s -s "$dir/postbacks.lua" "http://127.0.0.1:$port" >/dev/null
done

echo "wrk -t 2 -c $CONNECTIONS -d ${SECONDS_PER_RUN}s, $ROUNDS rounds alternating; both edges on 127.0.0.1, 2 workers each, Kafka acknowledgement on every postback"
echo
echo "| round | postback-ingest | requests/s | p50 ms | p99 ms | p99.9 ms | errors | non-2xx/3xx | CPU ms/request |"
echo "|---|---|---|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  read -r _ _ a_rps a_p50 a_p99 a_p999 a_err a_bad a_cpu < <(wrk_cpu_ms "$plain_pid" "http://127.0.0.1:$PLAIN_PORT" "$dir/postbacks.lua")
  read -r _ _ b_rps b_p50 b_p99 b_p999 b_err b_bad b_cpu < <(wrk_cpu_ms "$traced_pid" "http://127.0.0.1:$TRACED_PORT" "$dir/postbacks.lua")
  echo "| $round | no OTLP endpoint (baseline) | $a_rps | $a_p50 | $a_p99 | $a_p999 | $a_err | $a_bad | $a_cpu |"
  echo "| $round | every request traced and exported | $b_rps | $b_p50 | $b_p99 | $b_p999 | $b_err | $b_bad | $b_cpu |"
  echo "| $round | ratio traced / baseline | $(ratio "$b_rps" "$a_rps") | $(ratio "$b_p50" "$a_p50") | $(ratio "$b_p99" "$a_p99") | $(ratio "$b_p999" "$a_p999") | | | $(ratio "$b_cpu" "$a_cpu") |"
done
sleep 1
echo
echo "OTLP bytes received from the traced edge: $(cat "$dir/otlp-bytes" 2>/dev/null || echo 0)"

# shellcheck shell=bash
# bench/lib.sh — shared helpers for the benchmarks run by `make bench` (bench/run.sh).
# Source it after setting ROOT. Every server listens on 127.0.0.1; every load is bounded
# in time. Results are printed as Markdown so they can be pasted into BENCHMARKS.md.

: "${ROOT:?ROOT must be set before sourcing bench/lib.sh}"
# shellcheck source=deploy/local/lib.sh
source "$ROOT/deploy/local/lib.sh"

# BENCH_DIR (default .local/bench) holds the runs' scratch files and logs.
BENCH_DIR=${BENCH_DIR:-$LOCAL_DIR/bench}
mkdir -p "$BENCH_DIR"

# Installs the load generator (wrk) and the baseline server (nginx) from Debian.
bench_install() {
  local missing=()
  command -v wrk >/dev/null || missing+=(wrk)
  command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
  ((${#missing[@]} == 0)) && return
  log "apt: installing ${missing[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  # Debian's postinst may start the system nginx on port 80; the benchmark runs its own.
  as_root service nginx stop >/dev/null 2>&1 || true
}

# Starts an nginx that answers every request with a constant 302 and no other work:
# the baseline each edge is compared with. Prints its master PID.
# Usage: nginx_baseline_start PORT [WORKERS]
nginx_baseline_start() {
  local port=$1 workers=${2:-2} dir="$BENCH_DIR/nginx-$1"
  mkdir -p "$dir"
  cat >"$dir/nginx.conf" <<CONF
worker_processes $workers;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir;
  proxy_temp_path $dir;
  fastcgi_temp_path $dir;
  uwsgi_temp_path $dir;
  scgi_temp_path $dir;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$port;
    location / { return 302 https://offer.example/?c=baseline; }
  }
}
CONF
  /usr/sbin/nginx -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
  local pid=$!
  wait_port "$port" 10 || die "nginx baseline did not listen on $port (see $dir/error.log)"
  echo "$pid"
}

# Starts the click-ingest binary BIN for a benchmark on 127.0.0.1:PORT with 2 HTTP workers,
# its topics under PREFIX, GeoIP on when installed, its click log at SPILL and its output
# in OUTPUT, and waits until it is ready; sets CLICK_PID (set before the wait, so an EXIT
# trap can stop it).
# Usage: click_ingest_start BIN PORT PREFIX SPILL OUTPUT
click_ingest_start() {
  local bin=$1 port=$2 prefix=$3 spill=$4 output=$5 geoip="$LOCAL_DIR/geoip/country.mmdb" keys
  local start=$SECONDS
  [[ -f $geoip ]] || geoip=""
  keys=$(cat "$LOCAL_DIR/click-hash.keys" 2>/dev/null || echo "1:bench-click-hash-secret-0001")
  TRAFFSURE__HTTP__BIND=127.0.0.1:$port \
  TRAFFSURE__HTTP__WORKERS=2 \
  TRAFFSURE__KAFKA__TOPIC_PREFIX=$prefix \
  TRAFFSURE__CLICK_HASH__KEYS=$keys \
  TRAFFSURE__GEOIP__DATABASE=$geoip \
  TRAFFSURE__SPILL__PATH=$spill \
  TRAFFSURE__SPILL__MAX_QUEUED=${BENCH_CLICK_MAX_QUEUED:-50000} \
  TRAFFSURE__TELEMETRY__LOG_LEVEL=warn \
    "$bin" >"$output" 2>&1 &
  CLICK_PID=$!
  until [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" == 200 ]]; do
    kill -0 "$CLICK_PID" 2>/dev/null || die "click-ingest on $port exited (see $output)"
    ((SECONDS - start < 120)) || die "click-ingest on $port not ready after 120 s"
    sleep 0.2
  done
}

# Waits until something accepts TCP connections on 127.0.0.1:PORT.
wait_port() {
  local port=$1 timeout=${2:-30} start=$SECONDS
  while ((SECONDS - start < timeout)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# Waits until a TraffSure service on 127.0.0.1:PORT reports ready (`/readyz` answers 2xx).
wait_ready() {
  local port=$1 timeout=${2:-60} start=$SECONDS
  while ((SECONDS - start < timeout)); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return 0
    sleep 0.2
  done
  return 1
}

# Usage: postbacks_lua HASHES QUERY — a wrk script rotating through one postback per click
# hash in the file HASHES (`/postback?click=<hash>&QUERY&uid=bench-<n>`), printing the
# same RESULT line as run_wrk.
postbacks_lua() {
  echo "paths = {}"
  awk -v q="$2" '{ printf "paths[%d] = \"/postback?click=%s&%s&uid=bench-%d\"\n", NR, $1, q, NR }' "$1"
  cat <<'LUA'
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
LUA
  wrk_report_lua
}

# Usage: wrk_cpu_ms PID URL SCRIPT — one wrk run (CONNECTIONS, SECONDS_PER_RUN) with the
# wrk script SCRIPT: prints the RESULT fields and the server's CPU ms per request.
wrk_cpu_ms() {
  local pid=$1 url=$2 script=$3 before after line requests
  before=$(cpu_ticks "$pid")
  line=$(wrk -t 2 -c "$CONNECTIONS" -d "${SECONDS_PER_RUN}s" --timeout 5s -s "$script" "$url" \
    | awk '/^RESULT / { $1 = ""; sub(/^ /, ""); print }')
  after=$(cpu_ticks "$pid")
  requests=${line%% *}
  echo "$line $(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" \
    'BEGIN { if (n == 0) print "n/a"; else printf "%.4f", t * 1000 / hz / n }')"
}

# CPU microseconds per request, two decimals ("n/a" for no requests).
# Usage: per_request TICKS REQUESTS
per_request() {
  awk -v t="$1" -v hz="$(getconf CLK_TCK)" -v n="$2" \
    'BEGIN { if (n == 0) print "n/a"; else printf "%.2f", t * 1e6 / hz / n }'
}

# CPU clock ticks (user + system, all threads) used so far by a process and all its
# descendants (nginx workers, say).
cpu_ticks() {
  local pid=$1 total=0 p
  for p in $pid $(pgrep -P "$pid" 2>/dev/null); do
    [[ -r /proc/$p/stat ]] || continue
    # Fields 14 and 15 (utime, stime) counted after the ")" closing the command name.
    total=$((total + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat")))
  done
  echo "$total"
}

# CPU clock ticks (user + system) used so far by the threads of PID whose name matches
# the extended regex PATTERN (librdkafka's threads are `rdk:…`), read from
# /proc/PID/task/*/stat; threads that already exited are not counted.
cpu_ticks_threads() {
  local pid=$1 pattern=$2 total=0 t comm
  for t in /proc/"$pid"/task/*; do
    comm=$(cat "$t/comm" 2>/dev/null) || continue
    [[ $comm =~ $pattern ]] || continue
    total=$((total + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "$t/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

# Peak resident set size of a process in MiB (VmHWM), one decimal.
peak_rss_mib() {
  awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

# Prints the wrk Lua `done` hook that writes "RESULT requests seconds rps p50_ms p99_ms
# p999_ms errors non2xx3xx"; a script with its own `request` hook appends it.
wrk_report_lua() {
  cat <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %.3f %.1f %.3f %.3f %.3f %d %d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000,
    e.connect + e.read + e.write + e.timeout, e.status))
end
LUA
}

# Runs wrk against URL and prints one line: "requests seconds rps p50_ms p99_ms p999_ms
# errors non2xx3xx". WRK_HEADER, when set, is sent with every request (e.g. a User-Agent).
# Usage: run_wrk URL SECONDS CONNECTIONS [THREADS]
#
# BENCH_WRK_POLICY=batch runs wrk under SCHED_BATCH: on cores shared with the server, a
# woken wrk thread then no longer preempts the server mid-request. Without it, that
# happens most to the slowest server, the one wrk waits on: against click-ingest, 0.22
# involuntary context switches per request and about 0.85 µs more system time per request
# than under SCHED_BATCH (0.05–0.08 switches), against 0.04–0.07 switches for the actix
# floor, which keeps wrk busy (see BENCHMARKS.md). Batch scheduling only stops wrk from
# preempting; it still gets its fair share of the cores. It also delays wrk's reading of
# answers, so latency is measured without it.
run_wrk() {
  local url=$1 seconds=$2 conns=$3 threads=${4:-1} script="$BENCH_DIR/report.lua"
  local headers=() sched=()
  [[ -n ${WRK_HEADER:-} ]] && headers=(-H "$WRK_HEADER")
  [[ ${BENCH_WRK_POLICY:-} == batch ]] && command -v chrt >/dev/null && sched=(chrt -b 0)
  # WRK_LUA, when set, is a wrk script with its own `request` hook (see ua_mix_lua).
  if [[ -n ${WRK_LUA:-} ]]; then cat "$WRK_LUA" >"$script"; else : >"$script"; fi
  wrk_report_lua >>"$script"
  "${sched[@]}" wrk -t "$threads" -c "$conns" -d "${seconds}s" --timeout 5s "${headers[@]}" -s "$script" "$url" \
    | awk '/^RESULT / { $1 = ""; sub(/^ /, ""); print }'
}

# uap-core's test corpus (tests/test_device.yaml and test_ua.yaml, in the ua-parser crate's
# source that Cargo fetched), one user agent a line. Usage: ua_corpus OUT
ua_corpus() {
  local dir
  dir=$(cd "$ROOT" && cargo metadata --format-version 1 --offline 2>/dev/null | python3 -c '
import json, os, sys
pkg = next(p for p in json.load(sys.stdin)["packages"] if p["name"] == "ua-parser")
print(os.path.join(os.path.dirname(pkg["manifest_path"]), "uap-core", "tests"))')
  [[ -s $dir/test_device.yaml ]] || die "uap-core corpus not found (cargo fetch first)"
  sed -n "s/^ *- user_agent_string: *'\(.*\)'\$/\1/p" "$dir/test_device.yaml" "$dir/test_ua.yaml" \
    | sed "s/''/'/g" >"$1"
}

# A wrk script whose requests carry user agents from uap-core's corpus as real traffic
# does: 5,000 distinct agents (a fixed sample), the n-th most common sent with weight 1/n
# (Zipf), so a few hundred builds make most clicks and a long tail the rest.
# Usage: ua_mix_lua OUT
ua_mix_lua() {
  local corpus="$BENCH_DIR/ua-corpus.txt"
  ua_corpus "$corpus"
  python3 - "$corpus" "$1" <<'PY'
import json, random, sys
agents = sorted(set(l.rstrip("\n") for l in open(sys.argv[1], encoding="utf-8") if l.strip()))
agents = [a for a in agents if all(32 <= ord(c) < 127 for c in a)]
random.Random(7).shuffle(agents)
agents = agents[:5000]
with open(sys.argv[2], "w") as out:
    out.write("agents = {" + ",".join(json.dumps(a) for a in agents) + "}\n")
    out.write("""cum = {}
local total = 0
for i = 1, #agents do total = total + 1 / i; cum[i] = total end
math.randomseed(os.time())
request = function()
  local r, lo, hi = math.random() * total, 1, #agents
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cum[mid] < r then lo = mid + 1 else hi = mid end
  end
  return wrk.format("GET", nil, { ["User-Agent"] = agents[lo] })
end
""")
PY
}

# Builds every release binary and example when one of FILES is missing (make bench has
# built them already). Usage: build_release_if_missing FILE...
build_release_if_missing() {
  local f
  for f in "$@"; do
    if [[ ! -x $f ]]; then
      (cd "$ROOT" && cargo build --release --workspace --bins --examples --locked)
      return
    fi
  done
}

# Ratio A/B with two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }

#!/usr/bin/env bash
# make test's runner: every test binary of the workspace (unit tests of each crate and the
# end-to-end files in tests/tests/), run in TEST_LANES lanes side by side against the one
# running stack. Most of an end-to-end test's time is spent waiting on Kafka, ClickHouse
# and the services it starts, so lanes shorten the run on two cores. Each binary's output
# goes to target/test-logs/<binary>.log; a failed binary's log is printed whole. Every
# binary runs (no stop at the first failure); the exit status is non-zero if any failed.
#
# Usage: tests/run.sh [filter]    filter: a substring of the binaries' names to run
# Settings: TEST_LANES (default 3), TEST_LOG_DIR (default target/test-logs),
#           CARGO (default cargo), TRAFFSURE_TEST_TIMEOUT_SCALE (default 2: the tests'
#           waits for a condition may last twice as long as written, since the lanes
#           share the machine; a condition met ends its wait as soon as before),
#           TEST_CLUSTER (default 1: the fault tests on the local cluster stack,
#           cluster_faults and cluster_shards, run after the lanes, one after the other
#           and alone on the machine: they SIGKILL brokers and servers under a stream of
#           clicks and time leader moves, which the whole suite beside them starved; the
#           cluster stack starts in the background while the lanes run; 0 leaves them out).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CARGO=${CARGO:-cargo}
LANES=${TEST_LANES:-3}
LOGS=${TEST_LOG_DIR:-$ROOT/target/test-logs}
FILTER=${1:-}
export TRAFFSURE_TEST_TIMEOUT_SCALE=${TRAFFSURE_TEST_TIMEOUT_SCALE:-2}
mkdir -p "$LOGS"
rm -f "$LOGS"/*.log "$LOGS"/*.result

# The binaries, as cargo builds them: "<name>\t<package dir>\t<executable>".
# The cluster binaries (`test = false` in tests/Cargo.toml, so a bare `cargo test` leaves
# them out) are named to be built too, unless TEST_CLUSTER=0.
cluster_tests=()
if [[ ${TEST_CLUSTER:-1} != 0 ]]; then cluster_tests=(--test cluster_faults --test cluster_shards); fi
list=$({
  "$CARGO" test --workspace --locked --no-run --message-format=json
  if ((${#cluster_tests[@]})); then
    "$CARGO" test --locked -p traffsure-tests "${cluster_tests[@]}" --no-run --message-format=json
  fi
} | python3 -c '
import json, os, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable") or not m["profile"]["test"]:
        continue
    t = m["target"]
    kind = t["kind"][0]
    name = t["name"] if kind == "test" else t["name"] + "-" + kind
    print("%s\t%s\t%s" % (name, os.path.dirname(m["manifest_path"]), m["executable"]))
' | sort -u)
if [[ -n $FILTER ]]; then list=$(grep -F -- "$FILTER" <<<"$list" || true); fi
[[ -n $list ]] || { echo "tests/run.sh: no test binary matches '$FILTER'" >&2; exit 2; }

# Longest first (tests/durations.tsv: seconds a binary took in a full run), so that the
# slow binaries do not start last; the lanes then take the next binary as each one ends.
order=$(while IFS=$'\t' read -r name dir exe; do
  secs=$(awk -F'\t' -v n="$name" '$1 == n { print $2 }' tests/durations.tsv 2>/dev/null || true)
  printf '%s\t%s\t%s\t%s\n' "${secs:-30}" "$name" "$dir" "$exe"
done <<<"$list" | sort -t$'\t' -k1,1nr -k2,2)

# The binaries that share the cluster stack and kill parts of it (SERIAL) run after the
# lanes, one after the other, in this order.
SERIAL="cluster_faults cluster_shards"
serial=()
for name in $SERIAL; do
  line=$(awk -F'\t' -v n="$name" '$1 == n' <<<"$list")
  if [[ -n $line ]]; then serial+=("$line"); fi
done
order=$(awk -F'\t' -v serial=" $SERIAL " 'index(serial, " " $2 " ") == 0' <<<"$order")

run_one() {
  local name=$1 dir=$2 exe=$3 start rc=0
  start=$(date +%s)
  (cd "$dir" && CARGO_MANIFEST_DIR=$dir "$exe") >"$LOGS/$name.log" 2>&1 || rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - start))" >"$LOGS/$name.result"
  if ((rc == 0)); then
    echo "ok     $name ($(($(date +%s) - start)) s): $(grep -h '^test result:' "$LOGS/$name.log" | tail -1)"
  else
    echo "FAILED $name ($(($(date +%s) - start)) s, exit $rc)"
  fi
}
export -f run_one
export LOGS

total=$(wc -l <<<"$list")
echo "tests/run.sh: $total test binaries in $LANES lanes; logs in $LOGS"
started=$(date +%s)
cluster_pid=''
if ((${#serial[@]})); then
  deploy/local/cluster.sh start >"$LOGS/cluster-stack.out" 2>&1 &
  cluster_pid=$!
fi
if [[ -n $order ]]; then
  cut -f2- <<<"$order" | tr '\t' '\n' | xargs -d '\n' -n 3 -P "$LANES" bash -c 'run_one "$@"' _ || true
fi
if ((${#serial[@]})); then
  echo "tests/run.sh: the lanes took $(($(date +%s) - started)) s; now the cluster tests, alone"
  # A failed start is left to the tests, which start the stack again and say why.
  wait "$cluster_pid" || cat "$LOGS/cluster-stack.out"
  for line in "${serial[@]}"; do
    IFS=$'\t' read -r name dir exe <<<"$line"
    run_one "$name" "$dir" "$exe"
  done
fi

passed=0 failed=0 failures=()
for f in "$LOGS"/*.result; do
  IFS=$'\t' read -r name rc secs <"$f"
  if [[ $rc == 0 ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$name"); fi
done
# Durations of this run, for the next one's order.
cat "$LOGS"/*.result | awk -F'\t' '{ print $1 "\t" $3 }' | sort >"$LOGS/durations.tsv"
tests=$(cat "$LOGS"/*.log | awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "%d passed, %d failed, %d ignored", p, f, i }')
for name in "${failures[@]}"; do
  echo
  echo "=================== $name: output ==================="
  cat "$LOGS/$name.log"
done
echo
echo "tests/run.sh: $passed of $total binaries passed ($tests) in $(($(date +%s) - started)) s with $LANES lanes"
if ((failed > 0)); then
  echo "failed binaries: ${failures[*]}"
  exit 1
fi

#!/usr/bin/env bash
# make bench: runs every benchmark in bench/ (or the ones named) and prints Markdown
# results to paste into BENCHMARKS.md. Usage: bench/run.sh [name...]  e.g. click postback
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export ROOT
names=("$@")
if ((${#names[@]} == 0)); then
  for f in "$ROOT"/bench/*.sh; do
    n=$(basename "$f" .sh)
    [[ $n == lib || $n == run ]] || names+=("$n")
  done
fi
for n in "${names[@]}"; do
  [[ -f "$ROOT/bench/$n.sh" ]] || { echo "error: no benchmark bench/$n.sh" >&2; exit 2; }
  echo "## bench/$n.sh"
  bash "$ROOT/bench/$n.sh"
  echo
done

